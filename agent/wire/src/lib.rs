//! picket-wire: device identity, signed batch envelope and acknowledgements (see docs/wire.md).
