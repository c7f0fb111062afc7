//! The CRI's older `runtime.v1alpha2` API, served by the v1 services.
//!
//! Kubelets before 1.23 (and the cri-tools of that time) speak only `v1alpha2`. CRI v1 began as
//! a copy of v1alpha2 and has only added fields and calls since, under the same field numbers, so
//! a v1alpha2 request decodes as the v1 message and a v1 answer decodes as the v1alpha2 one (the
//! fields v1alpha2 does not know are skipped by its decoder). berthd therefore serves v1alpha2 by
//! renaming the call: `/runtime.v1alpha2.RuntimeService/X` is answered by
//! `/runtime.v1.RuntimeService/X`, as containerd 1.x served both versions from one
//! implementation. Calls only v1 has answer Unimplemented under the v1alpha2 name, as they
//! would from a v1alpha2 runtime, because v1alpha2 clients do not make them.
//!
//! The renamed request carries the [`API_HEADER`] metadata so that `Version` can answer
//! `runtime_api_version: v1alpha2` to the client that asked in v1alpha2.

use std::task::{Context, Poll};

/// Metadata set on a request that arrived as a v1alpha2 call.
pub const API_HEADER: &str = "x-berth-cri-api";

const ALPHA: &str = "/runtime.v1alpha2.";
const V1: &str = "/runtime.v1.";

/// Calls CRI v1 has and v1alpha2 never had: not served under the v1alpha2 name.
const V1_ONLY: &[&str] = &[
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "RuntimeConfig",
];

/// The path a call is answered under: v1alpha2 calls renamed to v1, `None` for a v1alpha2 call
/// that v1alpha2 does not have. Other paths (v1, berth's own API) are left as they are.
pub fn v1_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    let Some(rest) = path.strip_prefix(ALPHA) else {
        return Some(path.into());
    };
    let method = rest.rsplit('/').next().unwrap_or("");
    if V1_ONLY.contains(&method) {
        return None;
    }
    Some(format!("{V1}{rest}").into())
}

/// The layer that renames v1alpha2 calls (see the module's documentation).
#[derive(Clone, Copy, Default)]
pub struct AlphaLayer;

impl<S> tower_layer::Layer<S> for AlphaLayer {
    type Service = Alpha<S>;
    fn layer(&self, inner: S) -> Alpha<S> {
        Alpha { inner }
    }
}

#[derive(Clone)]
pub struct Alpha<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for Alpha<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if req.uri().path().starts_with(ALPHA) {
            let path = match v1_path(req.uri().path()) {
                Some(p) => p.into_owned(),
                // Leave it under the v1alpha2 name, which no service has: the router answers
                // Unimplemented as for any unknown call.
                None => req.uri().path().to_owned(),
            };
            let mut parts = req.uri().clone().into_parts();
            if let Ok(pq) = path.parse() {
                parts.path_and_query = Some(pq);
            }
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
            req.headers_mut()
                .insert(API_HEADER, http::HeaderValue::from_static("v1alpha2"));
        } else {
            // A client cannot claim v1alpha2 for a v1 call.
            req.headers_mut().remove(API_HEADER);
        }
        self.inner.call(req)
    }
}

/// The CRI version the client of this request speaks.
pub fn api_version<T>(req: &tonic::Request<T>) -> &'static str {
    match req.metadata().get(API_HEADER) {
        Some(v) if v == "v1alpha2" => "v1alpha2",
        _ => crate::cri_service::CRI_API_VERSION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_v1alpha2_calls_only() {
        assert_eq!(
            v1_path("/runtime.v1alpha2.RuntimeService/RunPodSandbox").as_deref(),
            Some("/runtime.v1.RuntimeService/RunPodSandbox")
        );
        assert_eq!(
            v1_path("/runtime.v1alpha2.ImageService/PullImage").as_deref(),
            Some("/runtime.v1.ImageService/PullImage")
        );
        assert_eq!(
            v1_path("/runtime.v1.RuntimeService/Version").as_deref(),
            Some("/runtime.v1.RuntimeService/Version")
        );
        assert_eq!(
            v1_path("/berth.v1.Images/Pull").as_deref(),
            Some("/berth.v1.Images/Pull")
        );
        assert_eq!(
            v1_path("/runtime.v1alpha2.RuntimeService/GetContainerEvents"),
            None
        );
    }
}
