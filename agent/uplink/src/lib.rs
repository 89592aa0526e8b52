//! picket-uplink: the agent side sender and the SOC collector.
