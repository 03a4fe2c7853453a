//! The link protocol between the diary and MAX (docs/architecture.md, «Links across the two
//! parties»): every cross-party message about a link carries the link's generation, which the diary
//! assigns from a counter that only grows, and MAX keeps a mark per pairwise subject — the newest
//! generation it has heard of and whether that link was removed. These rules decide whether a
//! message still describes the current state; they are shared so both parties apply the same ones.

use serde::{Deserialize, Serialize};

/// What MAX knows of the link behind one pairwise subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The newest generation heard of (provisioned or removed); -1 when none was.
    pub generation: i64,
    /// That link was removed.
    pub removed: bool,
    /// Link consents (`offline_access` authorizations) seen for this subject, ever.
    pub consents: i64,
    /// `consents` when the live link was last provisioned; `None` when it never was.
    pub linked_consents: Option<i64>,
}

impl Mark {
    /// The mark of a subject MAX has heard nothing about.
    pub const NONE: Mark = Mark { generation: -1, removed: true, consents: 0, linked_consents: None };

    /// Whether provisioning link `generation` applies: only a newer link, or the live one again. A
    /// late provision never revives a removed link, nor overwrites a newer one.
    pub fn provision_applies(&self, generation: i64) -> bool {
        generation > self.generation || (generation == self.generation && !self.removed)
    }

    /// Whether removing link `generation` applies: not when a newer link was heard of (a late unlink
    /// never touches a newer link). Removing the same link twice applies twice, harmlessly.
    pub fn detach_applies(&self, generation: i64) -> bool {
        generation >= self.generation
    }

    /// Whether a detach that applies must leave the grant in place: the person consented to a link
    /// again after the link being removed was provisioned (or it never was), so the grant may already
    /// carry a newer link the diary is storing — its tokens are not this unlink's to revoke. Such a
    /// grant ends with the next link's provisioning or, if none comes, with the sweep of unfinished
    /// grants.
    pub fn grant_awaits_newer_link(&self) -> bool {
        self.linked_consents.is_none_or(|linked| self.consents > linked)
    }
}

/// `GET /sferum/api/v1/links`: the grants of the caller's sector, by subject, one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPage {
    /// Grants in subject order.
    pub links: Vec<LinkEntry>,
    /// The `after` of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// One subject of the caller's sector as MAX has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEntry {
    /// The pairwise subject.
    pub sub: String,
    /// The generation of the live link MAX holds for it; `None` when no link is live (never
    /// provisioned, or removed).
    pub generation: Option<i64>,
    /// The profile is confirmed by a client of this sector (school data attached).
    pub confirmed: bool,
    /// When the person last consented to a link, Unix seconds (MAX's clock).
    pub consented_at: i64,
}

/// The longest page of [`LinkPage`].
pub const MAX_LINK_PAGE: i64 = 500;

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(generation: i64, removed: bool) -> Mark {
        Mark { generation, removed, consents: 1, linked_consents: Some(1) }
    }

    /// Issue 23, race 1: an unlink of an older link arriving after a newer one is stale.
    #[test]
    fn a_late_unlink_never_touches_a_newer_link() {
        assert!(!mark(3, false).detach_applies(1));
        assert!(mark(3, false).detach_applies(3));
        assert!(mark(3, true).detach_applies(3), "twice is harmless");
        assert!(Mark::NONE.detach_applies(0));
    }

    /// A provision of a removed or older link is stale; the live one, or a newer one, applies.
    #[test]
    fn a_late_provision_never_revives_a_removed_link() {
        assert!(!mark(3, true).provision_applies(3));
        assert!(!mark(3, false).provision_applies(2));
        assert!(!mark(3, true).provision_applies(1));
        assert!(mark(3, false).provision_applies(3));
        assert!(mark(3, true).provision_applies(4));
        assert!(Mark::NONE.provision_applies(0));
    }

    /// A consent after the link's provisioning (a relink under way) keeps the grant.
    #[test]
    fn a_grant_consented_again_after_the_link_awaits_the_newer_link() {
        let m = Mark { generation: 1, removed: false, consents: 2, linked_consents: Some(1) };
        assert!(m.grant_awaits_newer_link());
        assert!(!Mark { consents: 1, ..m }.grant_awaits_newer_link());
        assert!(Mark { linked_consents: None, ..m }.grant_awaits_newer_link());
    }
}
