//! Addresses the sandbox wires up. The metadata namespace owns every one of them,
//! so clients in the client namespace reach "cloud metadata" without any packet
//! leaving the sandbox.
use std::net::{Ipv4Addr, Ipv6Addr};

/// AWS / OpenStack / GCE / Azure IMDS link-local address.
pub const IMDS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// AWS IMDS IPv6 endpoint.
pub const IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// AWS ECS task metadata / credentials endpoint.
pub const ECS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// Azure WireServer.
pub const AZURE_WIRESERVER_V4: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// Alibaba Cloud metadata service.
pub const ALIBABA_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// Metadata-side veth address; also served by the fake service as "an unprotected destination".
pub const UNPROTECTED_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const UNPROTECTED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5a, 0, 0, 0, 0, 1);
/// Client-side veth addresses.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5a, 0, 0, 0, 0, 2);
/// The fake service listens on both ports, TCP and UDP.
pub const HTTP_PORT: u16 = 80;
pub const ALT_PORT: u16 = 8080;

/// Every IPv4 address the metadata namespace owns and serves.
pub const SERVED_V4: [Ipv4Addr; 5] = [
    IMDS_V4,
    ECS_V4,
    AZURE_WIRESERVER_V4,
    ALIBABA_V4,
    UNPROTECTED_V4,
];
/// Every IPv6 address the metadata namespace owns and serves.
pub const SERVED_V6: [Ipv6Addr; 2] = [IMDS_V6, UNPROTECTED_V6];
/// Ports served, TCP and UDP.
pub const PORTS: [u16; 2] = [HTTP_PORT, ALT_PORT];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textual_forms() {
        assert_eq!(IMDS_V4.to_string(), "169.254.169.254");
        assert_eq!(IMDS_V6.to_string(), "fd00:ec2::254");
        assert_eq!(ECS_V4.to_string(), "169.254.170.2");
        assert_eq!(AZURE_WIRESERVER_V4.to_string(), "168.63.129.16");
        assert_eq!(ALIBABA_V4.to_string(), "100.100.100.200");
        assert_eq!(UNPROTECTED_V6.to_string(), "2001:db8:5a::1");
        assert_eq!(CLIENT_V6.to_string(), "2001:db8:5a::2");
    }
}
