//! picket journal (being written).
