//! Destination keys. Every destination is looked up as a 16-byte IPv6
//! address; IPv4 addresses are stored and looked up in their IPv4-mapped form
//! (`::ffff:a.b.c.d`). One key space means a dual-stack socket connecting to
//! `::ffff:169.254.169.254` hits the same entry as a plain IPv4 connect, and
//! the protected set needs only one LPM trie.

/// Prefix length of a full IPv6 key.
pub const KEY_BITS: u32 = 128;
/// An IPv4 prefix of length `n` covers `96 + n` bits of the mapped key.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// Key for an IPv4 address given in network byte order as found in kernel
/// contexts (`user_ip4`, the IP header's daddr) read as a native `u32`.
#[inline(always)]
pub fn key_from_v4_raw(raw_be: u32) -> [u8; 16] {
    key_from_v4_octets(raw_be.to_ne_bytes())
}

#[inline(always)]
pub fn key_from_v4_octets(o: [u8; 4]) -> [u8; 16] {
    // Two words rather than sixteen bytes: in eBPF the ten zero bytes would
    // become a memset, a byte-at-a-time call on every connect.
    let low = u64::from_ne_bytes([0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]]);
    // SAFETY: both are 16 plain bytes.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([0, low]) }
}

/// Key for an IPv6 address given as four `u32` words in network byte order
/// read natively (`user_ip6`). Mapped addresses need no special case: they
/// already are the mapped key.
#[inline(always)]
pub fn key_from_v6_raw(words_be: [u32; 4]) -> [u8; 16] {
    // The words' bytes in memory order are the address. (A byte array
    // filled in a loop starts with a memset in eBPF.)
    // SAFETY: both are 16 plain bytes.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words_be) }
}

/// Buckets of the pre-filter that keeps the unprotected fast path to one
/// inlined array read: IPv4 destinations by their first octet (0..256),
/// others by the first byte of the IPv6 address (256..512).
pub const PREFILTER_BUCKETS: u32 = 512;

#[inline(always)]
pub fn prefilter_index(k: &[u8; 16]) -> u32 {
    if is_v4_mapped(k) {
        k[12] as u32
    } else {
        256 + k[0] as u32
    }
}

/// The prefix a pre-filter bucket stands for, as (prefix length, key).
pub fn prefilter_bucket(i: u32) -> (u32, [u8; 16]) {
    if i < 256 {
        (
            V4_MAPPED_PREFIX_BITS + 8,
            key_from_v4_octets([i as u8, 0, 0, 0]),
        )
    } else {
        let mut k = [0u8; 16];
        k[0] = (i - 256) as u8;
        (8, k)
    }
}

/// True when the key is an IPv4-mapped address.
#[inline(always)]
pub fn is_v4_mapped(k: &[u8; 16]) -> bool {
    k[..10] == [0; 10] && k[10] == 0xff && k[11] == 0xff
}

/// Port from a context's `user_port`, which holds the port in network byte
/// order in its low 16 bits.
#[inline(always)]
pub fn port_from_user_port(user_port: u32) -> u16 {
    u16::from_be(user_port as u16)
}

/// The remote port of `bpf_sock_ops` and `sk_msg_md`: the kernel loads the
/// network-order 16-bit port and shifts it into the upper half, so the whole
/// 32-bit field is the port in network byte order.
#[inline(always)]
pub fn port_from_remote_port(remote_port: u32) -> u16 {
    u32::from_be(remote_port) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_mapped_v6_give_the_same_key() {
        // 169.254.169.254 as the kernel stores it: network order in memory.
        let raw = u32::from_ne_bytes([169, 254, 169, 254]);
        let v4 = key_from_v4_raw(raw);
        let mapped: [u8; 16] = "::ffff:169.254.169.254"
            .parse::<core::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let words =
            [0, 1, 2, 3].map(|i| u32::from_ne_bytes(mapped[i * 4..i * 4 + 4].try_into().unwrap()));
        assert_eq!(v4, mapped);
        assert_eq!(key_from_v6_raw(words), mapped);
        assert!(is_v4_mapped(&v4));
        let v6: [u8; 16] = "fd00:ec2::254"
            .parse::<core::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert!(!is_v4_mapped(&v6));
    }

    #[test]
    fn prefilter_buckets_round_trip() {
        let imds = key_from_v4_octets([169, 254, 169, 254]);
        assert_eq!(prefilter_index(&imds), 169);
        assert_eq!(prefilter_bucket(169).1[12], 169);
        let v6: [u8; 16] = "fd00:ec2::254"
            .parse::<core::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(prefilter_index(&v6), 256 + 0xfd);
        assert_eq!(
            prefilter_bucket(256 + 0xfd),
            (8, {
                let mut k = [0; 16];
                k[0] = 0xfd;
                k
            })
        );
    }

    #[test]
    fn user_port_is_network_order() {
        assert_eq!(port_from_user_port(u16::to_be(80) as u32), 80);
        assert_eq!(port_from_user_port(u16::to_be(8080) as u32), 8080);
    }

    #[test]
    fn remote_port_is_shifted_network_order() {
        // What the kernel hands out on little-endian: the 16-bit network-order
        // port loaded as a u16, shifted left by 16.
        for port in [80u16, 8080, 32526] {
            let raw = (u16::to_be(port) as u32) << 16;
            assert_eq!(port_from_remote_port(raw.to_le()), port);
        }
    }
}
