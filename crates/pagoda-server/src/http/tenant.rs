//! Whose a request is, for the engine's fair share of its seats: the API
//! key it presents (`Authorization: Bearer`, configured keys or not), or,
//! without one, the address of the client's connection. Only a hash of
//! either reaches the engine.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

/// The address of a request's connection (a request extension, set by the
/// accept loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// A request's tenant, hashed (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant(pub u64);

impl Tenant {
    /// The tenant of a request with these credentials and this client.
    pub fn of(bearer: Option<&str>, client: Option<IpAddr>) -> Self {
        // SipHash with fixed keys: the same tenant on every run.
        let mut h = std::hash::DefaultHasher::new();
        match (bearer, client) {
            (Some(key), _) => ("key", key).hash(&mut h),
            (None, Some(ip)) => ("client", ip).hash(&mut h),
            (None, None) => "anonymous".hash(&mut h),
        }
        Tenant(h.finish())
    }
}

/// Sets the request's [`Tenant`].
pub async fn identify(mut request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::http::auth::bearer_token);
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
    let tenant = Tenant::of(bearer, client);
    request.extensions_mut().insert(tenant);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_then_clients_name_the_tenant() {
        let (a, b): (IpAddr, IpAddr) = (
            "127.0.0.1".parse().expect("ip"),
            "127.0.0.2".parse().expect("ip"),
        );
        assert_eq!(
            Tenant::of(Some("k1"), Some(a)),
            Tenant::of(Some("k1"), Some(b))
        );
        assert_ne!(
            Tenant::of(Some("k1"), Some(a)),
            Tenant::of(Some("k2"), Some(a))
        );
        assert_ne!(Tenant::of(None, Some(a)), Tenant::of(None, Some(b)));
        assert_eq!(Tenant::of(None, Some(a)), Tenant::of(None, Some(a)));
        assert_ne!(Tenant::of(Some("k1"), None), Tenant::of(None, None));
    }
}
