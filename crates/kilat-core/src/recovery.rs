//! The recovery decision (docs/protocol.md section 8), as a pure function of the request and a
//! history page read after the subscriber joined the live stream.

use kilat_protocol::reply::SubscribeResult;

use crate::engine::{HistoryPage, HistoryQuery};

/// What a subscribe asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Plain subscribe: start live from the current top (position returned, not positioned).
    None,
    /// `recover: true` without offset/epoch: start at the current end, positioned.
    ToEnd,
    /// Recover every publication after `offset` in `epoch`.
    From {
        /// Last offset the client saw.
        offset: u64,
        /// Its epoch.
        epoch: String,
    },
}

impl Recovery {
    /// Builds the request from subscribe params; `force` is the namespace's `force_recovery`.
    pub fn from_params(
        recover: bool,
        offset: Option<u64>,
        epoch: Option<String>,
        force: bool,
    ) -> Self {
        match (recover || force, offset, epoch) {
            (true, Some(offset), Some(epoch)) => Recovery::From { offset, epoch },
            (true, _, _) if recover => Recovery::ToEnd,
            _ => Recovery::None,
        }
    }

    /// The history read this recovery needs: everything after the offset, or only the position.
    pub fn query(&self) -> HistoryQuery {
        match self {
            Recovery::From { offset, .. } => HistoryQuery {
                since: Some(*offset),
                limit: None,
                reverse: false,
            },
            _ => HistoryQuery {
                since: None,
                limit: Some(0),
                reverse: false,
            },
        }
    }
}

/// The subscribe result for a recoverable channel given the history `page` (read with
/// [`Recovery::query`] after joining the live stream). The subscriber goes live at
/// `page.position`: live publications at or below it are dropped as duplicates.
///
/// `recovered` is true exactly when the epoch matches and every publication after the client's
/// offset is in `publications` (none left the window). With another epoch nothing is returned:
/// those offsets belong to a different stream.
pub fn outcome(recovery: &Recovery, page: HistoryPage) -> SubscribeResult {
    let top = page.position.offset;
    let mut result = SubscribeResult {
        recoverable: true,
        epoch: page.position.epoch,
        offset: top,
        recovered: false,
        publications: Vec::new(),
        positioned: !matches!(recovery, Recovery::None),
        ..SubscribeResult::default()
    };
    if let Recovery::From { offset, epoch } = recovery
        && *epoch == result.epoch
        && *offset <= top
    {
        let first = page.publications.first().and_then(|p| p.offset);
        result.recovered = *offset == top || first == Some(offset + 1);
        result.publications = page.publications;
    }
    result
}

#[cfg(test)]
mod tests {
    use kilat_protocol::{Publication, StreamPosition, types::raw_json};

    use super::*;

    fn page(offsets: &[u64], top: u64, epoch: &str) -> HistoryPage {
        HistoryPage {
            publications: offsets
                .iter()
                .map(|&o| Publication {
                    binary: None,
                    data: raw_json("1").expect("json"),
                    offset: Some(o),
                    info: None,
                })
                .collect(),
            position: StreamPosition {
                offset: top,
                epoch: epoch.into(),
            },
        }
    }

    fn from(offset: u64, epoch: &str) -> Recovery {
        Recovery::From {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn recovers_when_the_window_holds_everything() {
        let r = outcome(&from(3, "e"), page(&[4, 5], 5, "e"));
        assert!(r.recovered);
        assert_eq!(r.publications.len(), 2);
        assert_eq!(r.offset, 5);
        assert!(outcome(&from(5, "e"), page(&[], 5, "e")).recovered);
    }

    #[test]
    fn not_recovered_when_something_left_the_window() {
        let r = outcome(&from(1, "e"), page(&[4, 5], 5, "e"));
        assert!(!r.recovered);
        assert_eq!(r.publications.len(), 2, "what is left is still returned");
        assert!(!outcome(&from(1, "e"), page(&[], 5, "e")).recovered);
    }

    #[test]
    fn not_recovered_across_epochs_or_from_the_future() {
        let r = outcome(&from(3, "old"), page(&[4, 5], 5, "new"));
        assert!(!r.recovered);
        assert!(r.publications.is_empty());
        assert!(!outcome(&from(9, "e"), page(&[], 5, "e")).recovered);
    }

    #[test]
    fn params_pick_the_mode() {
        assert_eq!(
            Recovery::from_params(true, None, None, false),
            Recovery::ToEnd
        );
        assert_eq!(
            Recovery::from_params(false, Some(1), Some("e".into()), false),
            Recovery::None
        );
        assert_eq!(
            Recovery::from_params(false, Some(1), Some("e".into()), true),
            from(1, "e")
        );
        let end = outcome(&Recovery::ToEnd, page(&[], 7, "e"));
        assert!(end.positioned && !end.recovered && end.offset == 7);
    }
}
