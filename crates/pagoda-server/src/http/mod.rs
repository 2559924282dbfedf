//! The HTTP plumbing every endpoint shares: the accept loop and its
//! connection limits, the route table, the server state, errors as responses, authentication and request ids, tenants (whose a request is), SSE framing,
//! metrics, and the operational routes (`/health`, `/metrics`,
//! `/openapi.json`, the playground page at `/`).

pub(crate) mod auth;
pub(crate) mod body_deadline;
pub(crate) mod connections;
pub(crate) mod content_type;
pub(crate) mod errors;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod metrics_endpoint;
pub(crate) mod openapi;
pub(crate) mod parse_errors;
pub(crate) mod playground;
pub(crate) mod routes;
pub(crate) mod sse;
pub(crate) mod state;
pub(crate) mod tenant;

/// Largest accepted request body (the router's limit; a larger body is a 413
/// that names it).
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
