//! Network containment: block_ip and isolate_host (nftables, table `inet picket` only).
