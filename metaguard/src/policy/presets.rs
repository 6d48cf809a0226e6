//! Built-in endpoint presets: the metadata services of the common clouds,
//! pulled in with `include = ["aws", ...]`.
//!
//! Each endpoint covers the ports its service answers on (TCP and UDP). Not
//! every port: some of these addresses also serve DNS (GCE's metadata server
//! on 169.254.169.254:53, Azure's 168.63.129.16:53), and presets are combined
//! in multi-cloud images, so "every port" on one cloud's endpoint would cut
//! another cloud's name resolution for every guarded process.

/// One endpoint a preset defines.
#[derive(Debug, Clone, Copy)]
pub struct PresetEndpoint {
    pub name: &'static str,
    pub addresses: &'static [&'static str],
    /// `None` = every port.
    pub ports: Option<&'static [u16]>,
}

#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub endpoints: &'static [PresetEndpoint],
}

/// The metadata services answer HTTP on port 80.
const HTTP: &[u16] = &[80];

const fn ep(name: &'static str, addresses: &'static [&'static str]) -> PresetEndpoint {
    PresetEndpoint {
        name,
        addresses,
        ports: Some(HTTP),
    }
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "aws",
        endpoints: &[
            // EC2 Instance Metadata Service (IMDSv1/v2): instance identity, user
            // data and the instance profile's IAM credentials; IPv6 on Nitro.
            ep("aws-imds", &["169.254.169.254/32", "fd00:ec2::254/128"]),
            // ECS task metadata and task IAM role credentials (container
            // credentials provider, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI).
            ep("aws-ecs-task-metadata", &["169.254.170.2/32"]),
            // EKS Pod Identity agent: per-pod IAM credentials.
            ep(
                "aws-eks-pod-identity",
                &["169.254.170.23/32", "fd00:ec2::23/128"],
            ),
        ],
    },
    Preset {
        name: "gcp",
        endpoints: &[
            // metadata.google.internal: instance/project metadata and service
            // account access tokens; IPv6 on IPv6-enabled VMs.
            ep("gcp-metadata", &["169.254.169.254/32", "fd20:ce::254/128"]),
        ],
    },
    Preset {
        name: "azure",
        endpoints: &[
            // Azure Instance Metadata Service: instance data and managed
            // identity tokens.
            ep("azure-imds", &["169.254.169.254/32"]),
            // WireServer: VM agent/extension configuration and certificates
            // (80), and the guest agent's host plugin (32526). The same
            // address serves Azure DNS on 53, which stays reachable.
            PresetEndpoint {
                name: "azure-wireserver",
                addresses: &["168.63.129.16/32"],
                ports: Some(&[80, 32526]),
            },
        ],
    },
    Preset {
        name: "alibaba",
        endpoints: &[
            // Alibaba Cloud ECS metadata: instance data and RAM role STS tokens.
            ep("alibaba-metadata", &["100.100.100.200/32"]),
        ],
    },
    Preset {
        name: "oracle",
        endpoints: &[
            // OCI Instance Metadata Service (v1/v2): instance data and
            // instance principal certificates; IPv6 on IPv6-enabled VCNs.
            ep(
                "oracle-imds",
                &["169.254.169.254/32", "fd00:c1::a9fe:a9fe/128"],
            ),
        ],
    },
    Preset {
        name: "openstack",
        endpoints: &[
            // Nova metadata service (also EC2-compatible paths): user data,
            // keys, vendor data; IPv6 link-local on IPv6-only networks.
            ep(
                "openstack-metadata",
                &["169.254.169.254/32", "fe80::a9fe:a9fe/128"],
            ),
        ],
    },
];

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The preset that defines endpoint `name`, if any.
pub fn preset_of_endpoint(name: &str) -> Option<&'static Preset> {
    PRESETS
        .iter()
        .find(|p| p.endpoints.iter().any(|e| e.name == name))
}

pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_well_formed() {
        let mut names = std::collections::HashSet::new();
        for p in PRESETS {
            assert!(names.insert(p.name));
            for e in p.endpoints {
                assert!(names.insert(e.name), "duplicate name {}", e.name);
                assert!(!e.addresses.is_empty());
                for a in e.addresses {
                    let net: ipnet::IpNet = a.parse().unwrap();
                    assert_eq!(net, net.trunc(), "{a}");
                }
            }
        }
    }
}
