//! `udrbdmeta`: drbdmeta-compatible v08 meta-data tool. See `udrbd_tools::meta`.

fn main() {
    std::process::exit(udrbd_tools::meta::main());
}
