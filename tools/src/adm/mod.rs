//! `udrbdadm`: placeholder until the config and daemon issues fill it.
