//! The immutable config a proxy serves from; built off the hot path, swapped whole.

use crate::l4::L4Table;
use crate::matcher::RouteTable;
use crate::model::RoutingSpec;
use crate::validate::{ValidationError, validate};

/// A validated, compiled routing config with its version.
///
/// A request holds one `Arc<Snapshot>` from start to end, so a swap never changes
/// the routes under a request in flight.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub spec: RoutingSpec,
    pub table: RouteTable,
    pub l4: L4Table,
}

impl Snapshot {
    /// Validates and compiles `spec`; nothing is built when any part is invalid.
    pub fn build(spec: RoutingSpec, version: u64) -> Result<Self, ValidationError> {
        validate(&spec)?;
        let table = RouteTable::compile(&spec);
        let l4 = L4Table::compile(&spec, table.apps());
        Ok(Snapshot {
            version,
            spec,
            table,
            l4,
        })
    }

    /// An empty snapshot that routes nothing.
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            spec: RoutingSpec::default(),
            table: RouteTable::default(),
            l4: L4Table::default(),
        }
    }
}
