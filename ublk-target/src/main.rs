fn main() { eprintln!("udrbd: not yet built"); std::process::exit(1); }
