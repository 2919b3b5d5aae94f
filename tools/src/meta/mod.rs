//! `udrbdmeta`: placeholder until the metadata issue fills it.
