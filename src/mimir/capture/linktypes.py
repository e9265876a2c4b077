"""The link types mimir reads, by number and name: apart from the decoder, so that a command's help lists them
without loading numba."""

from __future__ import annotations

# Link types (https://www.tcpdump.org/linktypes.html) whose frames the decoder reaches IP through.
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in the writer's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW_12 = 12  # DLT_RAW on most systems
LINKTYPE_RAW_14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_PPP_HDLC = 50
LINKTYPE_RAW = 101
LINKTYPE_C_HDLC = 104
LINKTYPE_LOOP = 108  # OpenBSD loopback: address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback (null)",
    LINKTYPE_ETHERNET: "Ethernet, with 802.1Q/802.1ad/QinQ tags, LLC/SNAP, PPPoE and MPLS",
    LINKTYPE_PPP: "PPP",
    LINKTYPE_RAW_12: "raw IP (DLT_RAW, 12)",
    LINKTYPE_RAW_14: "raw IP (OpenBSD DLT_RAW, 14)",
    LINKTYPE_PPP_HDLC: "PPP in HDLC-like framing",
    LINKTYPE_RAW: "raw IP (101)",
    LINKTYPE_C_HDLC: "Cisco HDLC",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked v1 (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}
