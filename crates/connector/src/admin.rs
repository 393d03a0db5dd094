//! `/healthz`, `/readyz`, `/metrics` and `/status` on the admin port, apart
//! from any listener that takes records.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::status::StatusBoard;

struct AdminState {
    registry: Registry,
    status: Arc<StatusBoard>,
}

pub fn router(registry: Registry, status: Arc<StatusBoard>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // Ready once serving: a provider that is down is reported in /status and
        // the Synced condition, not by taking the connector out of its Service.
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status_document))
        .with_state(Arc::new(AdminState { registry, status }))
}

async fn status_document(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    Json(state.status.snapshot())
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    carerecord_serve::metrics(&state.registry)
}
