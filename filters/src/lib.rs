//! Request and response filters: one module per concern (API keys, OIDC, rate limits,
//! budgets, gRPC-Web and Connect translation, CORS) behind one phased trait.
//!
//! Empty until the authentication, translation and limits work lands; the data plane
//! of `tollgate-proxy` runs without filters today.
