//! The control service: commands, the append-only event log, projections, and the
//! watch/polling API that feeds proxies.
//!
//! A placeholder until the control-service work lands; proxies run from a static
//! config file today.
pub mod store;
