//! `udrbdadm`: the drbdadm-compatible administration tool for udrbd.

use std::process::ExitCode;

fn main() -> ExitCode {
    udrbd_tools::adm::main_with(std::env::args().skip(1))
}
