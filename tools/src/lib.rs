//! The administrator's tools: `udrbdadm` (drbdadm-compatible) and `udrbdmeta` (drbdmeta-compatible).

pub mod adm;
pub mod meta;
