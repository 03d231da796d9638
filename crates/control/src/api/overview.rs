//! The fleet at a glance, computed here so that a client of 10,000 sites
//! reads a page, not the fleet: `GET /fleet/overview` (sites counted by
//! state and grouped by a label) and `GET /fleet/sites` (one page of sites,
//! most severe first). A site's state is `Snapshot::site_health`, from the
//! same reports as deployment status; an application owner's counts only
//! its own deployments.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Extension, Query, State};
use outpost_api::manifest::Kind;
use outpost_api::selector::Selector;
use outpost_api::wire::{FleetOverview, HealthCounts, SiteGroup, SiteHealth, SitePage, SiteSummary};

use super::{ApiError, AppState, Principal, whole_number};
use crate::status::Snapshot;

/// The label the overview groups by when the caller names none.
pub const DEFAULT_GROUP_BY: &str = "region";

/// The most sites listed per group, or per page.
const MAX_LISTED: i64 = 1000;

/// Every site the caller sees that `selector` picks, summed up, most
/// severe first (then by name).
async fn summaries(
    state: &AppState,
    principal: &Principal,
    selector: &Selector,
) -> Result<Vec<SiteSummary>, ApiError> {
    let sites: Vec<_> = state
        .store
        .list(Kind::Site)
        .await?
        .into_iter()
        .filter(|site| selector.matches(&site.metadata.labels) && principal.sees(site))
        .collect();
    let snapshot = Snapshot::take(state.store.as_ref(), &state.fleet.presence).await?;
    let mut summaries: Vec<SiteSummary> = sites
        .iter()
        .map(|site| snapshot.site_summary(site, principal.owner()))
        .collect();
    summaries.sort_by(|a, b| a.health.cmp(&b.health).then_with(|| a.name.cmp(&b.name)));
    Ok(summaries)
}

fn selector(query: &HashMap<String, String>) -> Result<Selector, ApiError> {
    match query.get("selector").filter(|text| !text.trim().is_empty()) {
        Some(text) => text
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("invalid selector {text:?}: {e}"))),
        None => Ok(Selector::all()),
    }
}

/// `GET /api/v1/fleet/overview?groupBy=region&perGroup=100`.
pub(super) async fn overview(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<FleetOverview>, ApiError> {
    let group_by = query
        .get("groupBy")
        .map(|label| label.trim())
        .filter(|label| !label.is_empty())
        .unwrap_or(DEFAULT_GROUP_BY)
        .to_string();
    outpost_api::validate::check_label_key(&group_by)
        .map_err(|why| ApiError::BadRequest(format!("groupBy: {why}")))?;
    let per_group = whole_number(&query, "perGroup", 100)?.min(MAX_LISTED) as usize;
    let mut overview = FleetOverview {
        group_by: group_by.clone(),
        ..Default::default()
    };
    let mut groups: BTreeMap<String, SiteGroup> = BTreeMap::new();
    for site in summaries(&state, &principal, &selector(&query)?).await? {
        overview.counts.add(site.health);
        let value = site.labels.get(&group_by).cloned().unwrap_or_default();
        let group = groups.entry(value.clone()).or_insert_with(|| SiteGroup {
            value,
            counts: HealthCounts::default(),
            sites: Vec::new(),
        });
        group.counts.add(site.health);
        if group.sites.len() < per_group {
            group.sites.push(site);
        }
    }
    overview.groups = groups.into_values().collect();
    overview.groups.sort_by(|a, b| {
        b.counts
            .total()
            .cmp(&a.counts.total())
            .then_with(|| a.value.cmp(&b.value))
    });
    Ok(Json(overview))
}

/// `GET /api/v1/fleet/sites?selector=S&health=failed&offset=0&perPage=50`.
pub(super) async fn sites(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<SitePage>, ApiError> {
    let health = query
        .get("health")
        .filter(|text| !text.is_empty())
        .map(|text| text.parse::<SiteHealth>())
        .transpose()
        .map_err(|why| ApiError::BadRequest(format!("health: {why}")))?;
    let offset = whole_number(&query, "offset", 0)? as usize;
    let limit = whole_number(&query, "perPage", 50)?.clamp(1, MAX_LISTED) as usize;
    let matching: Vec<SiteSummary> = summaries(&state, &principal, &selector(&query)?)
        .await?
        .into_iter()
        .filter(|site| health.is_none_or(|health| site.health == health))
        .collect();
    Ok(Json(SitePage {
        total: matching.len(),
        offset,
        items: matching.into_iter().skip(offset).take(limit).collect(),
    }))
}
