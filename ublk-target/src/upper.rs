//! The upper layer: a volume exposed as `/dev/ublkbN` through the ublk frontend, each block
//! request turned into an engine request on the driver thread (the same path as `Node::write`).
//!
//! Only a node that will be Primary needs this; where the host has no ublk (no
//! `/dev/ublk-control`), the in-process API and the `udrbd write/read` client are the upper
//! layer instead, and `expose` says why it could not be used.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;
use udrbd_engine::RequestOp;

use crate::frontend::{self, BlockTarget, DeviceConfig, Errno, Op, Request, Stopper};
use crate::node::Event;

/// The ublk control device; without it there is no ublk on this host.
pub const UBLK_CONTROL: &str = "/dev/ublk-control";

/// Forwards block requests to the driver and waits for their completion.
pub struct NodeTarget {
    pub tx: Sender<Event>,
    pub volume: u16,
}

impl NodeTarget {
    fn call(&self, op: RequestOp) -> Result<Option<Bytes>, Errno> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(Event::Upper {
                volume: self.volume,
                op,
                reply,
            })
            .map_err(|_| Errno::EIO)?;
        rx.recv().map_err(|_| Errno::EIO)?.map_err(|_| Errno::EIO)
    }
}

impl BlockTarget for NodeTarget {
    fn handle(&self, request: &Request, buf: &mut [u8]) -> Result<u32, Errno> {
        let sector = request.offset_bytes / 512;
        let len = request.len_bytes;
        match request.op {
            Op::Read => {
                let data = self
                    .call(RequestOp::Read {
                        sector,
                        len_bytes: len,
                    })?
                    .ok_or(Errno::EIO)?;
                let n = (len as usize).min(buf.len()).min(data.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok(n as u32)
            }
            Op::Write { fua } => {
                let n = (len as usize).min(buf.len());
                let data = Bytes::copy_from_slice(&buf[..n]);
                self.call(RequestOp::Write {
                    sector,
                    data,
                    fua,
                    preflush: false,
                })?;
                Ok(n as u32)
            }
            Op::Flush => self.call(RequestOp::Flush).map(|_| 0),
            Op::Discard | Op::WriteZeroes => self
                .call(RequestOp::Discard {
                    sector,
                    len_bytes: len,
                })
                .map(|_| len),
        }
    }
}

/// Starts serving `volume` as a ublk device on its own thread. Returns the device id and a
/// handle to stop it, or why ublk cannot be used here.
pub fn expose(
    tx: Sender<Event>,
    volume: u16,
    name: &str,
    size_bytes: u64,
) -> Result<(u32, Stopper), String> {
    if !Path::new(UBLK_CONTROL).exists() {
        return Err(format!(
            "{UBLK_CONTROL} not present (ublk_drv not loaded or not available)"
        ));
    }
    // ublk wants whole physical blocks; DRBD's size is in 512-byte sectors.
    let size_bytes = size_bytes & !0xfff;
    let config = DeviceConfig::new(name, size_bytes);
    config.validate().map_err(|e| e.to_string())?;
    let target = Arc::new(NodeTarget { tx, volume });
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let started_tx2 = started_tx.clone();
    std::thread::Builder::new()
        .name(format!("ublk:{name}"))
        .spawn(move || {
            let res = frontend::serve(&config, target, move |id, stopper| {
                let _ = started_tx.send(Ok((id, stopper)));
            });
            if let Err(e) = res {
                let _ = started_tx2.send(Err(e.to_string()));
            }
        })
        .map_err(|e| e.to_string())?;
    started_rx
        .recv()
        .map_err(|_| "ublk thread ended without starting".to_string())?
}
