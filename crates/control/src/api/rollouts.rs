//! A deployment's rollout: its status, and the operator's commands.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use outpost_api::manifest::Kind;
use outpost_api::parse_documents;
use outpost_api::wire::ApplyResponse;

use super::{Actor, ApiError, AppState, Principal, optional_body};
use crate::store::ApplyOptions;

/// `GET /api/v1/deployments/{name}/rollout`: the rollout, every site's
/// state and the deployment's rollout history.
pub(super) async fn rollout_status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<outpost_api::wire::RolloutStatus>, ApiError> {
    let object = state.visible(&principal, Kind::Deployment, &name).await?;
    let shown = name;
    let name = object.metadata.name.clone();
    let sites = state
        .with_status(vec![object])
        .await?
        .pop()
        .and_then(|o| o.status)
        .and_then(|s| serde_json::from_value::<outpost_api::wire::DeploymentStatus>(s).ok())
        .map(|s| s.sites)
        .unwrap_or_default();
    let rollout = state.store.rollouts().await?.remove(&name);
    let history = state
        .store
        .rollout_history(&name)
        .await?
        .into_iter()
        .map(
            |(version, started_at, outcome)| outpost_api::wire::RolloutRecord {
                version,
                started_at,
                outcome,
            },
        )
        .collect();
    Ok(Json(outpost_api::wire::RolloutStatus {
        deployment: shown,
        rollout,
        sites,
        history,
    }))
}

/// `POST /api/v1/deployments/{name}/rollout/{promote|pause|resume|abort}`.
pub(super) async fn rollout_command(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Path((name, command)): Path<(String, String)>,
) -> Result<Json<outpost_api::rollout::RolloutState>, ApiError> {
    use outpost_api::rollout::Command;
    let command = match command.as_str() {
        "promote" => Command::Promote,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "abort" => Command::Abort,
        other => {
            return Err(ApiError::NotFound(format!(
                "no rollout command {other:?} (use promote, pause, resume, abort or undo)"
            )));
        }
    };
    let name = state
        .visible(&principal, Kind::Deployment, &name)
        .await?
        .metadata
        .name;
    let rollout = state.fleet.command(&name, command).await?;
    tracing::info!(%actor, deployment = %name, ?command, "rollout command");
    Ok(Json(rollout))
}

/// `POST /api/v1/deployments/{name}/rollout/undo`: pins the deployment to
/// an earlier version (the one before the current rollout by default),
/// which rolls out like any change.
pub(super) async fn rollout_undo(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let request: outpost_api::wire::UndoRequest = optional_body(body, "an undo request")?;
    let object = state.visible(&principal, Kind::Deployment, &name).await?;
    let name = object.metadata.name.clone();
    let target = match request.to_version {
        Some(version) => version,
        None => {
            // History holds releases; an undo pins the application version
            // (secrets always go forward: set the old value again instead).
            let history = state.store.rollout_history(&name).await?;
            let version = |release: &str| outpost_api::secret::split_release(release).0.to_string();
            let current = history.last().map(|(v, _, _)| version(v));
            history
                .iter()
                .rev()
                .map(|(v, _, _)| version(v))
                .find(|v| Some(v) != current.as_ref())
                .ok_or_else(|| {
                    ApiError::Conflict(format!(
                        "deployment {name:?} has no earlier version to go back to (a change of secrets alone is undone by setting the secret again)"
                    ))
                })?
        }
    };
    let mut manifest = object.manifest_json();
    manifest["spec"]["version"] = serde_json::Value::String(target.clone());
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| ApiError::Internal(e.to_string()))?;
    let documents = parse_documents(&format!("undo of {name}"), &text).map_err(ApiError::Invalid)?;
    let mut results = state
        .store
        .apply(&documents, &actor, ApplyOptions::default())
        .await?;
    for result in &mut results {
        result.name = principal.shown_name(&result.name).to_string();
    }
    tracing::info!(%actor, deployment = %name, version = %target, "rollout undo");
    state.recompute().await;
    Ok(Json(ApplyResponse {
        dry_run: false,
        results,
    }))
}
