//! The v08 generation identifiers (spec §2, offsets 8–47 of the superblock).

/// Value of the current UUID right after `create-md` (kernel and drbdmeta `UUID_JUST_CREATED`).
pub const UUID_JUST_CREATED: u64 = 0x4;

/// The four data generation UUIDs of a v08 superblock, in on-disk order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uuids {
    /// `UI_CURRENT`: the data generation this disk holds.
    pub current: u64,
    /// `UI_BITMAP`: generation the bitmap is based on (0 when the bitmap is empty/unused).
    pub bitmap: u64,
    /// `UI_HISTORY_START`, `UI_HISTORY_END`: younger and older history.
    pub history: [u64; 2],
}

impl Uuids {
    /// The UUID set `create-md` writes.
    pub fn just_created() -> Uuids {
        Uuids {
            current: UUID_JUST_CREATED,
            ..Uuids::default()
        }
    }

    /// In the order the superblock stores them (and `get-gi` prints them).
    pub fn to_array(self) -> [u64; 4] {
        [self.current, self.bitmap, self.history[0], self.history[1]]
    }

    pub fn from_array(a: [u64; 4]) -> Uuids {
        Uuids {
            current: a[0],
            bitmap: a[1],
            history: [a[2], a[3]],
        }
    }
}
