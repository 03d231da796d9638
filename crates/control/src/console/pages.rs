//! The console's pages: each handler asks the REST API (`Console::get`,
//! `Console::call`) and renders what it answered.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use outpost_api::access::{AuditEntry, TokenCreated, TokenInfo};
use outpost_api::rollout::Phase;
use outpost_api::secret::SecretList;
use outpost_api::telemetry::{EventList, LogList, StoredEvent};
use outpost_api::wire::{
    ApplyRequest, ApplyResponse, DeploymentSiteState, DeploymentStatus, FleetOverview, HostList, ObjectList,
    PlanResponse, RolloutStatus, SiteHealth, SitePage, SiteStatus, SourceFile, StoredObject,
};

use super::{Caller, Console, Refusal, Source, decode, page, query, same_origin, session_cookie, to_sign_in};

type Params = Query<HashMap<String, String>>;

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> &'a str {
    params.get(name).map(String::as_str).unwrap_or_default()
}

/// A value as the API spells it (`upToDate`, `started`).
fn spelled<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn health_badge(health: SiteHealth) -> Markup {
    html! { span class={"state " (health.as_str())} { (health.words()) } }
}

fn deployment_badge(state: DeploymentSiteState) -> Markup {
    let (class, words) = match state {
        DeploymentSiteState::UpToDate => ("upToDate", "up to date"),
        DeploymentSiteState::Progressing => ("progressing", "progressing"),
        DeploymentSiteState::Failed => ("failed", "failed"),
        DeploymentSiteState::Offline => ("offline", "offline"),
    };
    html! { span class={"state " (class)} { (words) } }
}

fn table(head: &[&str], rows: Markup) -> Markup {
    html! {
        div.table {
            table {
                thead { tr { @for name in head { th scope="col" { (name) } } } }
                tbody { (rows) }
            }
        }
    }
}

fn events_table(events: &[StoredEvent]) -> Markup {
    if events.is_empty() {
        return html! { p.muted { "Nothing happened." } };
    }
    table(
        &["When", "Site", "Host", "Event", "Instance", "Message"],
        html! {
            @for event in events.iter().rev() {
                tr {
                    td { (event.at) }
                    td { a href={"/ui/sites/" (event.site)} { (event.site) } }
                    td { (event.host) }
                    td { (spelled(&event.kind)) }
                    td { (event.instance) }
                    td { (event.message) }
                }
            }
        },
    )
}

/// `GET /ui/`: the fleet overview.
pub(super) async fn overview(
    State(console): State<Console>,
    caller: Caller,
    Query(params): Params,
) -> Result<Html<String>, Refusal> {
    let group_by = param(&params, "groupBy");
    let overview: FleetOverview = console
        .get(
            &caller,
            &format!(
                "/fleet/overview{}",
                query(&[("groupBy", group_by), ("perGroup", "200")])
            ),
        )
        .await?;
    let hour_ago = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let events: EventList = console
        .get(
            &caller,
            &format!("/events{}", query(&[("since", &hour_ago), ("limit", "25")])),
        )
        .await?;
    let content = html! {
        section aria-label="Sites by state" {
            div.counts {
                @for health in SiteHealth::ALL {
                    a class={"count " (health.as_str())} href={"/ui/sites" (query(&[("health", health.as_str())]))} {
                        strong { (overview.counts.get(health)) }
                        (health.words())
                    }
                }
            }
        }
        h2 { "Sites by " (overview.group_by) }
        form.group method="get" action="/ui/" {
            label for="groupBy" { "Group by label"
                input #groupBy name="groupBy" value=(overview.group_by);
            }
            button type="submit" { "Group" }
        }
        @for group in &overview.groups {
            @let name = if group.value.is_empty() { format!("no {}", overview.group_by) } else { group.value.clone() };
            section.group aria-label=(name) {
                h3 {
                    (name) " "
                    span.muted { "(" (group.counts.total()) " sites: "
                        (group.counts.failed) " failed, " (group.counts.progressing) " progressing, "
                        (group.counts.offline_unexpected + group.counts.offline_expected + group.counts.never_connected) " offline)" }
                }
                div.heat {
                    @for site in &group.sites {
                        a class={"cell " (site.health.as_str())} href={"/ui/sites/" (site.name)}
                            title={(site.name) ": " (site.health.words())}
                            aria-label={(site.name) ": " (site.health.words())} {}
                    }
                }
                @if group.sites.len() < group.counts.total() {
                    @let selector = if group.value.is_empty() { format!("!{}", overview.group_by) } else { format!("{}={}", overview.group_by, group.value) };
                    p { a href={"/ui/sites" (query(&[("selector", &selector)]))} {
                        "All " (group.counts.total()) " sites of " (name) ", most severe first" } }
                }
            }
        }
        h2 { "What changed in the last hour" }
        (events_table(&events.items))
    };
    Ok(page(
        "Fleet overview",
        &format!("/ui/{}", query(&[("groupBy", group_by)])),
        content,
    ))
}

/// `GET /ui/sites`: sites a selector picks, most severe first.
pub(super) async fn sites(
    State(console): State<Console>,
    caller: Caller,
    Query(params): Params,
) -> Result<Html<String>, Refusal> {
    let (selector, health) = (param(&params, "selector"), param(&params, "health"));
    let offset: usize = param(&params, "offset").parse().unwrap_or(0);
    const PER_PAGE: usize = 50;
    let listed: SitePage = console
        .get(
            &caller,
            &format!(
                "/fleet/sites{}",
                query(&[
                    ("selector", selector),
                    ("health", health),
                    ("offset", &offset.to_string()),
                    ("perPage", &PER_PAGE.to_string()),
                ])
            ),
        )
        .await?;
    let at = |offset: usize| {
        format!(
            "/ui/sites{}",
            query(&[
                ("selector", selector),
                ("health", health),
                ("offset", &offset.to_string())
            ])
        )
    };
    let content = html! {
        form.search method="get" action="/ui/sites" role="search" {
            label for="selector" { "Selector (such as region=eu, tier in (gold))"
                input #selector name="selector" value=(selector) size="40";
            }
            label for="health" { "State"
                select #health name="health" {
                    option value="" selected[health.is_empty()] { "any" }
                    @for state in SiteHealth::ALL {
                        option value=(state.as_str()) selected[health == state.as_str()] { (state.words()) }
                    }
                }
            }
            button type="submit" { "Search" }
        }
        p.muted { (listed.total) " sites match." }
        (table(&["Site", "State", "Why", "Hosts online", "Last seen"], html! {
            @for site in &listed.items {
                tr {
                    td { a href={"/ui/sites/" (site.name)} { (site.name) } }
                    td { (health_badge(site.health)) }
                    td { (site.reason) }
                    td { (site.online_hosts) " of " (site.hosts) }
                    td { (site.last_seen.as_deref().unwrap_or("never")) }
                }
            }
        }))
        nav aria-label="Pages" {
            @if offset > 0 { a href=(at(offset.saturating_sub(PER_PAGE))) { "← Previous" } " " }
            @if offset + PER_PAGE < listed.total { a href=(at(offset + PER_PAGE)) { "Next →" } }
        }
    };
    Ok(page("Sites", &at(offset), content))
}

/// `GET /ui/sites/{name}[?logs=APPLICATION]`: one site, with the tail of
/// one application's logs there (the first it runs unless `logs` says).
pub(super) async fn site(
    State(console): State<Console>,
    caller: Caller,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Html<String>, Refusal> {
    let site: StoredObject = console.get(&caller, &format!("/sites/{name}")).await?;
    let status: SiteStatus = site
        .status
        .clone()
        .and_then(|status| serde_json::from_value(status).ok())
        .ok_or_else(|| Refusal {
            status: StatusCode::BAD_GATEWAY,
            message: format!("site {name:?} came without its status"),
        })?;
    let hosts: HostList = console
        .get(&caller, &format!("/hosts{}", query(&[("site", &name)])))
        .await?;
    let events: EventList = console
        .get(
            &caller,
            &format!("/events{}", query(&[("site", &name), ("limit", "30")])),
        )
        .await?;
    let deployments: ObjectList = console.get(&caller, "/deployments").await?;
    let here: Vec<(String, outpost_api::wire::DeploymentSite)> = deployments
        .items
        .into_iter()
        .filter_map(|deployment| {
            let status: DeploymentStatus = serde_json::from_value(deployment.status?).ok()?;
            let on_site = status.sites.into_iter().find(|s| s.site == name)?;
            Some((deployment.metadata.name, on_site))
        })
        .collect();
    let running: std::collections::BTreeSet<&str> = hosts
        .items
        .iter()
        .flat_map(|host| &host.details)
        .map(|instance| instance.application.as_str())
        .collect();
    let logs_of = match param(&params, "logs") {
        "" => running.first().copied().unwrap_or_default(),
        chosen => chosen,
    };
    let logs: LogList = if logs_of.is_empty() {
        LogList { items: Vec::new() }
    } else {
        console
            .get(
                &caller,
                &format!(
                    "/logs{}",
                    query(&[("application", logs_of), ("site", &name), ("limit", "50")])
                ),
            )
            .await?
    };
    let content = html! {
        p {
            (if status.online { "Online" } else { "Offline" }) ": " (status.online_hosts) " of " (status.hosts) " hosts connected; revision "
            (status.applied_revision) " of " (status.revision) " applied."
            @if let Some(seen) = &status.last_seen { " Last seen " (seen) "." }
        }
        @if !site.metadata.labels.is_empty() {
            p.muted { "Labels: " @for (key, value) in &site.metadata.labels { (key) "=" (value) " " } }
        }
        @if !status.failures.is_empty() {
            div.refusal role="alert" { @for failure in &status.failures { p { (failure) } } }
        }
        h2 { "Deployments" }
        (table(&["Deployment", "State", "Why"], html! {
            @for (deployment, on_site) in &here {
                tr {
                    td { a href={"/ui/deployments/" (deployment)} { (deployment) } }
                    td { (deployment_badge(on_site.state)) }
                    td { (on_site.reason) }
                }
            }
        }))
        h2 { "Hosts" }
        (table(&["Host", "Online", "Role", "Agent", "Revision", "Facts", "Traffic (received / sent)"], html! {
            @for host in &hosts.items {
                tr {
                    td { (host.name) }
                    td { (if host.online { "yes" } else { "no" }) }
                    td { (host.role.as_deref().unwrap_or("-")) }
                    td { (host.agent_version) }
                    td { (host.applied_revision) }
                    td { @for (key, value) in &host.facts { (key) "=" (value) " " } }
                    td { (outpost_api::quantity::approximate_bytes(host.bytes_received.max(0) as u64)) " / "
                        (outpost_api::quantity::approximate_bytes(host.bytes_sent.max(0) as u64)) }
                }
            }
        }))
        h2 { "Instances" }
        (table(&["Instance", "State", "Why", "Version", "Host"], html! {
            @for host in &hosts.items {
                @for instance in &host.details {
                    tr {
                        td { (instance.instance) }
                        td { (instance.state) }
                        td { (instance.reason) }
                        td { (if instance.version.is_empty() { "(earlier)" } else { instance.version.as_str() }) }
                        td { (host.name) }
                    }
                }
            }
        }))
        @if !status.cluster.is_empty() {
            h2 { "Cluster" }
            (table(&["Host", "Role", "Hears", "Placement epoch"], html! {
                @for member in &status.cluster {
                    tr {
                        td { (member.host) }
                        td { (member.role.as_deref().unwrap_or("-")) }
                        td { (member.hears.join(", ")) }
                        td { (member.epoch) }
                    }
                }
            }))
        }
        h2 { "Recent events" }
        (events_table(&events.items))
        h2 { "Log tail" }
        form.group method="get" action={"/ui/sites/" (name)} {
            label for="logs" { "Application"
                select #logs name="logs" {
                    @for application in &running {
                        option value=(application) selected[*application == logs_of] { (application) }
                    }
                }
            }
            button type="submit" { "Show its logs" }
        }
        @if logs.items.is_empty() {
            p.muted { "No log lines from " (if logs_of.is_empty() { "this site" } else { logs_of }) " yet." }
        } @else {
            pre.logs aria-label={"Logs of " (logs_of)} {
                @for line in &logs.items {
                    (line.line.at) " " (line.host) " " (line.instance) " " (line.line.stream) ": " (line.line.text) "\n"
                }
            }
        }
    };
    Ok(page(
        &format!("Site {name}"),
        &format!("/ui/sites/{name}{}", query(&[("logs", logs_of)])),
        content,
    ))
}

/// `GET /ui/deployments`.
pub(super) async fn deployments(
    State(console): State<Console>,
    caller: Caller,
) -> Result<Html<String>, Refusal> {
    let listed: ObjectList = console.get(&caller, "/deployments").await?;
    let content = table(
        &[
            "Deployment",
            "Application",
            "Sites",
            "Up to date",
            "Progressing",
            "Failed",
            "Offline",
        ],
        html! {
            @for deployment in &listed.items {
                @let status: DeploymentStatus = deployment.status.clone().and_then(|s| serde_json::from_value(s).ok()).unwrap_or_default();
                tr {
                    td { a href={"/ui/deployments/" (deployment.metadata.name)} { (deployment.metadata.name) } }
                    td { (deployment.spec.get("application").and_then(|a| a.as_str()).unwrap_or_default()) }
                    td { (deployment.spec.get("sites").and_then(|a| a.as_str()).unwrap_or("all")) }
                    td { (status.up_to_date) }
                    td { (status.progressing) }
                    td { (status.failed) }
                    td { (status.offline) }
                }
            }
        },
    );
    Ok(page("Deployments", "/ui/deployments", content))
}

/// What each rollout command does, for its button and its confirmation.
const COMMANDS: [(&str, &str); 5] = [
    ("pause", "Pause: the current wave stays, the next does not start"),
    ("resume", "Resume: the rollout goes on from where it stopped"),
    (
        "promote",
        "Promote: the next wave starts without waiting for healthyFor",
    ),
    ("abort", "Abort: the rollout stops; sites keep what they run"),
    ("undo", "Undo: roll out the version before this one"),
];

/// `GET /ui/deployments/{name}`: its rollout, wave by wave.
pub(super) async fn deployment(
    State(console): State<Console>,
    caller: Caller,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Html<String>, Refusal> {
    let status: RolloutStatus = console
        .get(&caller, &format!("/deployments/{name}/rollout"))
        .await?;
    let states: HashMap<&str, &outpost_api::wire::DeploymentSite> = status
        .sites
        .iter()
        .map(|site| (site.site.as_str(), site))
        .collect();
    let done = param(&params, "done");
    let content = html! {
        @if !done.is_empty() {
            p.notice role="status" { "Done: " (done) "." }
        }
        @match &status.rollout {
            None => p { "No rollout yet." },
            Some(rollout) => {
                @let (phase, current) = match &rollout.phase {
                    Phase::Running { wave, .. } => ("running".to_string(), Some(*wave)),
                    Phase::Paused { wave, reason } => (format!("paused: {reason}"), Some(*wave)),
                    Phase::Succeeded => ("succeeded".to_string(), None),
                    Phase::RolledBack { reason } => (format!("rolled back: {reason}"), None),
                    Phase::Aborted { wave } => ("aborted".to_string(), Some(*wave)),
                };
                p #phase { "Rollout to " strong { (rollout.to) } ": " strong { (phase) } }
                div.actions {
                    @for (command, what) in COMMANDS {
                        a.button href={"/ui/deployments/" (name) "/" (command)} title=(what) { (command) } " "
                    }
                }
                @for (index, wave) in rollout.waves.iter().enumerate() {
                    @let when = match current {
                        Some(current) if index < current => "done",
                        Some(current) if index == current => "current",
                        Some(_) => "to come",
                        None => "",
                    };
                    h2 { "Wave " (wave.name) " " span.muted { (when) } }
                    (table(&["Site", "State", "Why"], html! {
                        @for site in &wave.sites {
                            tr {
                                td { a href={"/ui/sites/" (site)} { (site) } }
                                @match states.get(site.as_str()) {
                                    Some(on_site) => {
                                        td { (deployment_badge(on_site.state)) }
                                        td {
                                            @if on_site.state == DeploymentSiteState::Offline && when != "to come" {
                                                "passed over while offline: " (on_site.reason)
                                            } @else if on_site.state != DeploymentSiteState::UpToDate && when == "current" {
                                                "the wave waits on it: " (on_site.reason)
                                            } @else { (on_site.reason) }
                                            @if let Some(failed) = rollout.failed.get(site) { " (failed: " (failed) ")" }
                                        }
                                    },
                                    None => { td { "-" } td { "no longer selected" } },
                                }
                            }
                        }
                    }))
                }
            }
        }
        h2 { "History" }
        (table(&["Version", "Started", "Outcome"], html! {
            @for record in status.history.iter().rev() {
                tr { td { (record.version) } td { (record.started_at) } td { (record.outcome) } }
            }
        }))
    };
    Ok(page(
        &format!("Deployment {name}"),
        &format!("/ui/deployments/{name}"),
        content,
    ))
}

fn command_of(command: &str) -> Result<&'static str, Refusal> {
    COMMANDS
        .iter()
        .find(|(name, _)| *name == command)
        .map(|(_, what)| *what)
        .ok_or_else(|| Refusal {
            status: StatusCode::NOT_FOUND,
            message: format!("{command:?} is not a rollout command (pause, resume, promote, abort, undo)"),
        })
}

/// `GET /ui/deployments/{name}/{command}`: asks before it acts.
pub(super) async fn confirm_command(
    caller: Caller,
    Path((name, command)): Path<(String, String)>,
) -> Result<Html<String>, Refusal> {
    let _ = caller;
    let what = command_of(&command)?;
    let content = html! {
        p { (what) "." }
        form method="post" action={"/ui/deployments/" (name) "/" (command)} {
            button.primary type="submit" { "Yes, " (command) " " (name) }
            " "
            a href={"/ui/deployments/" (name)} { "Cancel" }
        }
    };
    Ok(page(&format!("{command} the rollout of {name}?"), "", content))
}

/// `POST /ui/deployments/{name}/{command}`: the API's rollout command
/// (audited there), then back to the deployment.
pub(super) async fn run_command(
    State(console): State<Console>,
    caller: Caller,
    headers: HeaderMap,
    Path((name, command)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    command_of(&command)?;
    same_origin(&headers)?;
    let (path, body) = if command == "undo" {
        (
            format!("/deployments/{name}/rollout/undo"),
            Some(("application/json", b"{}".to_vec())),
        )
    } else {
        (format!("/deployments/{name}/rollout/{command}"), None)
    };
    console.call(&caller, Method::POST, &path, body).await?;
    Ok(Redirect::to(&format!("/ui/deployments/{name}{}", query(&[("done", &command)]))).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct ApplyForm {
    yaml: String,
    /// `plan` (first) or `apply` (after the plan was shown).
    step: String,
}

fn apply_page(yaml: &str, above: Markup, can_apply: bool) -> Html<String> {
    let content = html! {
        (above)
        form method="post" action="/ui/apply" {
            label for="yaml" { "Manifests (YAML, as `outpost apply -f` takes them)"
                textarea #yaml name="yaml" spellcheck="false" { (yaml) }
            }
            p {
                button type="submit" name="step" value="plan" { "Plan" }
                @if can_apply { " " button.primary type="submit" name="step" value="apply" { "Apply" } }
            }
        }
    };
    page("Apply manifests", "", content)
}

/// `GET /ui/apply`.
pub(super) async fn apply_form(_caller: Caller) -> Html<String> {
    apply_page(
        "",
        html! { p { "Paste manifests; the plan shows what each site would do before anything is applied." } },
        false,
    )
}

/// `POST /ui/apply`: the plan first, then (`step=apply`) the apply, with
/// the API's own errors (file, line and column) when the YAML is wrong.
pub(super) async fn apply(
    State(console): State<Console>,
    caller: Caller,
    headers: HeaderMap,
    Form(form): Form<ApplyForm>,
) -> Result<Html<String>, Refusal> {
    same_origin(&headers)?;
    let yaml = form.yaml.replace("\r\n", "\n");
    let request = ApplyRequest {
        files: vec![SourceFile {
            name: "console.yaml".to_string(),
            content: yaml.clone(),
        }],
        dry_run: false,
    };
    let body = serde_json::to_vec(&request).map(|json| Some(("application/json", json)));
    let body = body.map_err(|err| Refusal {
        status: StatusCode::BAD_REQUEST,
        message: err.to_string(),
    })?;
    if form.step == "apply" {
        return Ok(match console.call(&caller, Method::POST, "/apply", body).await {
            Ok(bytes) => {
                let applied: ApplyResponse = decode("/apply", &bytes)?;
                let above = html! {
                    div.notice role="status" {
                        p { "Applied:" }
                        ul { @for result in &applied.results {
                            li { (result.kind) " " (result.name) ": " (result.action.as_str()) " (generation " (result.generation) ")" }
                        } }
                    }
                };
                apply_page(&yaml, above, false)
            }
            Err(refusal) => apply_page(&yaml, refused(&refusal), false),
        });
    }
    Ok(match console.call(&caller, Method::POST, "/plan", body).await {
        Ok(bytes) => {
            let plan: PlanResponse = decode("/plan", &bytes)?;
            let above = html! {
                h2 { "Plan" }
                @if plan.deployments.is_empty() { p { "No deployment changes what sites run." } }
                @for deployment in &plan.deployments {
                    h3 { "Deployment " (deployment.name) ": " (deployment.application) " " (deployment.version) " on " (deployment.selector) }
                    @for wave in &deployment.waves {
                        (table(&["Wave", "Site", "Action", "Instances", "Why"], html! {
                            @for site in &wave.sites {
                                tr { td { (wave.wave) } td { (site.site) } td { (site.action) } td { (site.instances.join(", ")) } td { (site.reason) } }
                            }
                        }))
                    }
                    @if !deployment.not_selected.is_empty() {
                        p.muted { "Not selected: " (deployment.not_selected.join(", ")) }
                    }
                }
            };
            apply_page(&yaml, above, true)
        }
        Err(refusal) => apply_page(&yaml, refused(&refusal), false),
    })
}

fn refused(refusal: &Refusal) -> Markup {
    html! { div.refusal role="alert" { strong { (refusal.status.as_u16()) } " " (refusal.message) } }
}

/// `GET /ui/applications`.
pub(super) async fn applications(
    State(console): State<Console>,
    caller: Caller,
) -> Result<Html<String>, Refusal> {
    let listed: ObjectList = console.get(&caller, "/applications").await?;
    let content = table(
        &["Application", "Version", "Services", "Generation", "Updated"],
        html! {
            @for application in &listed.items {
                tr {
                    td { (application.metadata.name) }
                    td { (application.spec.get("version").and_then(|v| v.as_str()).unwrap_or_default()) }
                    td { (application.spec.get("services").and_then(|s| s.as_array()).map_or(0, Vec::len)) }
                    td { (application.metadata.generation) }
                    td { (application.metadata.updated_at) }
                }
            }
        },
    );
    Ok(page("Applications", "", content))
}

/// `GET /ui/secrets`: names, keys and versions; never a value.
pub(super) async fn secrets(State(console): State<Console>, caller: Caller) -> Result<Html<String>, Refusal> {
    let listed: SecretList = console.get(&caller, "/secrets").await?;
    let content = table(
        &["Secret", "Version", "Keys", "Sites", "Updated"],
        html! {
            @for secret in &listed.items {
                tr {
                    td { (secret.name) }
                    td { (secret.version) }
                    td { (secret.keys.join(", ")) }
                    td { (secret.sites.as_deref().unwrap_or("all")) }
                    td { (secret.updated_at) }
                }
            }
        },
    );
    Ok(page("Secrets", "", content))
}

/// `GET /ui/tokens`: never the tokens themselves.
pub(super) async fn tokens(State(console): State<Console>, caller: Caller) -> Result<Html<String>, Refusal> {
    let listed: Vec<TokenInfo> = console.get(&caller, "/tokens").await?;
    let content = table(
        &["Token", "User", "Role", "Tenant", "Sites", "Expires", "Revoked"],
        html! {
            @for token in &listed {
                tr {
                    td { (token.name) }
                    td { (token.user) }
                    td { (token.role) }
                    td { (token.tenant) }
                    td { (token.sites.as_deref().unwrap_or("all")) }
                    td { (token.expires_at.as_deref().unwrap_or("never")) }
                    td { (token.revoked_at.as_deref().unwrap_or("")) }
                }
            }
        },
    );
    Ok(page("API tokens", "", content))
}

/// `GET /ui/audit`: the newest entries of the audit trail.
pub(super) async fn audit(State(console): State<Console>, caller: Caller) -> Result<Html<String>, Refusal> {
    let entries: Vec<AuditEntry> = console.get(&caller, "/audit?limit=200").await?;
    let content = table(
        &[
            "#", "When", "User", "Tenant", "Action", "Objects", "From", "Status", "Result",
        ],
        html! {
            @for entry in entries.iter().rev() {
                tr {
                    td { (entry.id) }
                    td { (entry.at) }
                    td { (entry.user) }
                    td { (entry.tenant) }
                    td { (entry.action) }
                    td { (entry.objects.join(", ")) }
                    td { (entry.source) }
                    td { (entry.status) }
                    td { (entry.result) }
                }
            }
        },
    );
    Ok(page("Audit trail", "", content))
}

#[derive(serde::Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    link: String,
    #[serde(default)]
    then: String,
}

fn sign_in_page(status: StatusCode, message: &str, link: &str, then: &str) -> Response {
    let content = html! {
        @if !message.is_empty() { div.refusal role="alert" { (message) } }
        @if link.is_empty() {
            form method="post" action="/ui/signin" {
                input type="hidden" name="then" value=(then);
                label for="token" { "API token (outpost token create, or admin.yaml)"
                    input #token name="token" type="password" autocomplete="off" size="50";
                }
                p { button.primary type="submit" { "Sign in" } }
            }
            p.muted { "With OpenID Connect, sign in with " code { "outpost login" } " and paste the token it keeps, or ask an admin for a one-time link." }
        } @else {
            form method="post" action="/ui/signin" {
                input type="hidden" name="link" value=(link);
                input type="hidden" name="then" value=(then);
                p { "This one-time link signs you in once, then no longer works." }
                button.primary type="submit" { "Sign in with this link" }
            }
        }
    };
    let html = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · Outpost" }
                link rel="stylesheet" href="/ui/assets/console.css";
            }
            body { header { span.brand { "Outpost" } } main { h1 { "Sign in" } (content) } }
        }
    };
    (status, Html(html.into_string())).into_response()
}

/// `GET /ui/signin[?link=TOKEN][&then=/ui/...]`.
pub(super) async fn sign_in_form(Query(params): Params) -> Response {
    sign_in_page(StatusCode::OK, "", param(&params, "link"), param(&params, "then"))
}

/// Only a console page to go back to after signing in.
fn then_or_overview(then: &str) -> &str {
    if then.starts_with("/ui/") && !then.starts_with("/ui//") {
        then
    } else {
        "/ui/"
    }
}

/// `POST /ui/signin`: an API token, checked by asking the API with it, or
/// a one-time link, traded at the API for a token; either goes in the
/// session cookie.
pub(super) async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Source(source): Source,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Err(refusal) = same_origin(&headers) {
        return refusal.into_response();
    }
    let then = then_or_overview(&form.then).to_string();
    let (token, lifetime) = if form.link.is_empty() {
        let caller = Caller {
            token: form.token.trim().to_string(),
            source,
        };
        match console
            .call(&caller, Method::GET, "/fleet/overview?perGroup=0", None)
            .await
        {
            Ok(_) => (caller.token, crate::oidc::SIGN_IN_TTL),
            Err(refusal) if refusal.status == StatusCode::UNAUTHORIZED => {
                return sign_in_page(
                    StatusCode::UNAUTHORIZED,
                    "That token is not valid: unknown, expired or revoked.",
                    "",
                    &then,
                );
            }
            Err(refusal) => return refusal.into_response(),
        }
    } else {
        let caller = Caller {
            token: String::new(),
            source,
        };
        let body = serde_json::json!({ "token": form.link }).to_string().into_bytes();
        match console
            .call(
                &caller,
                Method::POST,
                "/login/link",
                Some(("application/json", body)),
            )
            .await
            .and_then(|bytes| decode::<TokenCreated>("/login/link", &bytes))
        {
            Ok(created) => (created.token, crate::oidc::SIGN_IN_TTL),
            Err(refusal) => {
                return sign_in_page(refusal.status, &refusal.message, "", &then);
            }
        }
    };
    let mut response = Redirect::to(&then).into_response();
    if let Ok(value) = session_cookie(&token, lifetime).parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /ui/signout`: the session ends at the API (a session a one-time
/// link made is revoked there) and its cookie is cleared.
pub(super) async fn sign_out(
    State(console): State<Console>,
    headers: HeaderMap,
    Source(source): Source,
) -> Response {
    if let Err(refusal) = same_origin(&headers) {
        return refusal.into_response();
    }
    if let Some(token) = super::session_token(&headers) {
        let caller = Caller { token, source };
        // An expired or revoked token is signed out already.
        let _ = console.call(&caller, Method::DELETE, "/login", None).await;
    }
    let mut response = to_sign_in("/ui/");
    if let Ok(value) = session_cookie("", std::time::Duration::ZERO).parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
