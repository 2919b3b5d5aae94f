//! The ublk frontend: placeholder until the VM-lab and ublk issues fill it.
