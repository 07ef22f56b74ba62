//! Which days a site needs sealed at an instant, and whether a sealed day
//! stays provisional: the policy of [`super::Sealer`], without I/O.

use super::{DAY, FINAL_AFTER, SEAL_AFTER};

/// What a site needs: one step seals one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The newest day again, for the last time.
    Reseal(i64),
    /// A day after the newest.
    Seal(i64),
}

/// A site's work as of one instant.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SitePlan {
    /// Delete the site's store first: it no longer matches the raw tables.
    pub restart: bool,
    pub steps: Vec<Step>,
    /// Complete days with raw events not sealed.
    pub pending: usize,
}

/// Whether `day` is complete at `now`: over, and [`SEAL_AFTER`] past.
pub fn complete(day: i64, now: i64) -> bool {
    (day + 1) * DAY + SEAL_AFTER <= now
}

/// What a site needs at `now`. `sealed`: the days in its store, ascending;
/// `raw`: days with raw events, ascending, from `from` (the oldest raw day
/// retention keeps; older ones are ignored); `provisional`: the newest
/// sealed day when some of its visits were open then, and whether they have
/// all ended since.
pub fn plan(
    sealed: &[i64],
    raw: &[i64],
    from: i64,
    provisional: Option<(i64, bool)>,
    now: i64,
) -> SitePlan {
    let raw = raw.iter().copied().filter(|d| *d >= from);
    let newest = sealed.last().copied();
    let gap = raw
        .clone()
        .any(|d| newest.is_some_and(|n| d < n) && sealed.binary_search(&d).is_err());
    if gap {
        let steps: Vec<Step> = raw.filter(|d| complete(*d, now)).map(Step::Seal).collect();
        return SitePlan {
            restart: true,
            pending: steps.len(),
            steps,
        };
    }
    let new: Vec<i64> = raw
        .filter(|d| newest.is_none_or(|n| *d > n) && complete(*d, now))
        .collect();
    let mut steps = Vec::with_capacity(new.len() + 1);
    if let Some((p, ended)) = provisional
        && Some(p) == newest
        && (ended || !new.is_empty() || (p + 1) * DAY + FINAL_AFTER <= now)
    {
        steps.push(Step::Reseal(p));
    }
    steps.extend(new.iter().copied().map(Step::Seal));
    SitePlan {
        restart: false,
        steps,
        pending: new.len(),
    }
}

/// Whether a day sealed at `now` must be sealed once more: some of its
/// visits were open (`open`), this was not its `last` seal, and its final
/// seal is still to come.
pub fn stays_provisional(day: i64, now: i64, open: bool, last: bool) -> bool {
    open && !last && now < (day + 1) * DAY + FINAL_AFTER
}

/// A day as its date, for the log.
pub fn date(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * DAY, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default()
}
