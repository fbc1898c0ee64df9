//! Serde shape of the `revocation_list` body and its decode-time bound: a `list` of 1 to
//! [`MAX_REVOCATION_LIST`] bytes, a zero-copy slice of the frame.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::wire::revocation::{RevocationList, MAX_REVOCATION_LIST};
use crate::wire::WireError;

#[derive(Serialize)]
pub(super) struct RevocationListSer<'a> {
    #[serde(with = "serde_bytes")]
    list: &'a [u8],
}

impl<'a> From<&'a RevocationList> for RevocationListSer<'a> {
    fn from(m: &'a RevocationList) -> Self {
        RevocationListSer { list: &m.list }
    }
}

#[derive(Deserialize)]
pub(super) struct RevocationListDe<'a> {
    #[serde(with = "serde_bytes", borrow)]
    list: &'a [u8],
}

impl RevocationListDe<'_> {
    /// The body, `list` sliced out of `frame` (which `self` borrows from).
    pub(super) fn check(self, frame: &Bytes) -> Result<RevocationList, WireError> {
        if self.list.is_empty() || self.list.len() > MAX_REVOCATION_LIST {
            return Err(WireError::InvalidField {
                field: "list",
                reason: format!(
                    "{} bytes, outside 1..={MAX_REVOCATION_LIST}",
                    self.list.len()
                ),
            });
        }
        Ok(RevocationList {
            list: frame.slice_ref(self.list),
        })
    }
}
