//! Reading a volume's v08 meta-data at attach time (through `udrbd-metadata`), into what the
//! engine needs: UUIDs, flags, the bitmap and where the areas lie.
//!
//! Attach first does what drbdadm's `apply-al` step does (through the metadata crate), then, like
//! the kernel, refuses meta-data that still is not clean.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use udrbd_engine as engine;
use udrbd_metadata::io::FileIo;
use udrbd_metadata::layout::{superblock_offset, MetaIndex};
use udrbd_metadata::md::apply_al;
use udrbd_metadata::superblock::{Magic, MdFlags, Superblock};

use crate::backing::device_size;

#[derive(Debug, Clone)]
pub struct AttachSpec {
    pub volume: u16,
    pub minor: u32,
    pub disk: PathBuf,
    pub meta_disk: PathBuf,
    /// None: internal meta-data; Some(-2): flexible external; Some(i ≥ 0): indexed slot.
    pub meta_index: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Meta {
        path: PathBuf,
        source: udrbd_metadata::Error,
    },
    #[error("{path}: Found unclean meta data. Did you \"drbdadm apply-al\"?")]
    Unclean { path: PathBuf },
    #[error("{path}: bad meta-data index {index}")]
    BadIndex { path: PathBuf, index: i32 },
    #[error("{path}: meta-data offsets point outside the device (md_offset {md_offset:#x}, bm_offset {bm_offset} sectors)")]
    Offsets {
        path: PathBuf,
        md_offset: u64,
        bm_offset: i32,
    },
}

/// Reads the superblock and bitmap of one volume.
pub fn read_meta(spec: &AttachSpec) -> Result<engine::AttachedDisk, AttachError> {
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| AttachError::Io {
            path: path.clone(),
            source,
        }
    };
    let index = match spec.meta_index {
        None | Some(-3) => MetaIndex::Internal,
        Some(-2) => MetaIndex::FlexExternal,
        Some(i) => MetaIndex::Indexed(u8::try_from(i).map_err(|_| AttachError::BadIndex {
            path: spec.meta_disk.clone(),
            index: i,
        })?),
    };
    let meta_path = if index.is_internal() {
        &spec.disk
    } else {
        &spec.meta_disk
    };
    // What drbdadm does before every attach: replay the activity log into the bitmap (if the
    // node was Primary) and mark the meta-data clean, so that a crashed node can attach again.
    {
        let mut mio = FileIo::open(meta_path, true).map_err(io(meta_path))?;
        let done = apply_al(&mut mio, index).map_err(|source| AttachError::Meta {
            path: meta_path.clone(),
            source,
        })?;
        for m in &done.messages {
            tracing::info!("{}: {m}", meta_path.display());
        }
        if done.applied {
            tracing::info!(
                "{}: activity log replayed: {} extents hot, {} bits newly out of sync",
                meta_path.display(),
                done.hot.len(),
                done.additional_bits
            );
        }
    }
    let mf = File::open(meta_path).map_err(io(meta_path))?;
    let meta_bytes = device_size(&mf).map_err(io(meta_path))?;
    let md_offset = superblock_offset(index, meta_bytes).map_err(|source| AttachError::Meta {
        path: meta_path.clone(),
        source,
    })?;
    let mut buf = vec![0u8; 4096];
    mf.read_exact_at(&mut buf, md_offset)
        .map_err(io(meta_path))?;
    let sb = Superblock::decode(&buf, md_offset).map_err(|source| AttachError::Meta {
        path: meta_path.clone(),
        source,
    })?;
    // drbd_md_read: unclean meta-data must be replayed by drbdmeta apply-al first.
    if sb.magic == Magic::V84_UNCLEAN || !sb.flags.contains(MdFlags::AL_CLEAN) {
        return Err(AttachError::Unclean {
            path: meta_path.clone(),
        });
    }
    let data_bytes = if index.is_internal() {
        meta_bytes
    } else {
        let f = File::open(&spec.disk).map_err(io(&spec.disk))?;
        device_size(&f).map_err(io(&spec.disk))?
    };
    let md_sect = md_offset / 512;
    let size_sectors = if index.is_internal() {
        // Usable data ends where the meta-data area begins (bitmap first).
        let first = md_sect as i64 + sb.bm_offset as i64;
        if first <= 0 {
            return Err(AttachError::Offsets {
                path: meta_path.clone(),
                md_offset,
                bm_offset: sb.bm_offset,
            });
        }
        first as u64
    } else {
        let bm_sect = (sb.md_size_sect as i64 - sb.bm_offset as i64).max(0) as u64;
        (data_bytes / 512).min(bm_sect * 32768)
    };
    // One bit per 4 KiB (8 sectors), stored as little-endian u64 words.
    let words = size_sectors.div_ceil(8).div_ceil(64) as usize;
    let bm_start = md_offset as i64 + sb.bm_offset as i64 * 512;
    if bm_start < 0 || bm_start as u64 + words as u64 * 8 > meta_bytes {
        return Err(AttachError::Offsets {
            path: meta_path.clone(),
            md_offset,
            bm_offset: sb.bm_offset,
        });
    }
    let mut raw = vec![0u8; words * 8];
    mf.read_exact_at(&mut raw, bm_start as u64)
        .map_err(io(meta_path))?;
    let bitmap = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok(engine::AttachedDisk {
        size_sectors,
        uuids: sb.uuids.to_array(),
        flags: sb.flags.0,
        la_size_sect: sb.la_size_sect,
        device_uuid: sb.device_uuid,
        la_peer_max_bio_size: sb.la_peer_max_bio_size,
        bitmap,
        layout: engine::MetaLayout {
            md_offset_bytes: md_offset,
            al_offset_sect: sb.al_offset,
            bm_offset_sect: sb.bm_offset,
            md_size_sect: sb.md_size_sect,
            al_stripes: sb.al_stripes,
            al_stripe_size_4k: sb.al_stripe_size_4k,
        },
    })
}
