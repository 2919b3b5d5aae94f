//! The verbs that drive a udrbd node (everything but `dump`).
//!
//! Stub: the daemon issue fills this in. The CLI front end (`udrbdadm`) parses the command
//! line and the configuration, then calls [`run`] once per invocation for every verb other
//! than `dump`.

use std::process::ExitCode;

use super::{AdmError, Context, Verb};

/// Runs `verb` on the resources named in `ctx.targets`.
pub fn run(ctx: &Context, verb: &Verb) -> Result<ExitCode, AdmError> {
    let _ = ctx;
    Err(AdmError::not_implemented(verb.name()))
}
