"""Where a frame's IP header is and how to read it, compiled with numba.

`network_layer` walks a frame's link layer, and the tags, shims and tunnels-to-IP of `_after_ethertype`, to the
outermost IP header; `ipv6_upper_layer` walks the IPv6 extension headers to the transport. The flow table's kernel
(flowtable.py) calls them for every packet and reads the IP fields at the offsets named here. Every protocol
number and header offset is a module constant, which numba compiles as a literal: naming them costs nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mimir.capture.binary import be16, be32, le32
from mimir.capture.jitcache import forget_if_changed
from mimir.capture.linktypes import (  # the decoder reads them as constants
    LINKTYPE_C_HDLC,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_PPP,
    LINKTYPE_PPP_HDLC,
    LINKTYPE_RAW,
    LINKTYPE_RAW_12,
    LINKTYPE_RAW_14,
    SUPPORTED_LINKTYPES,  # noqa: F401 - where the readers and the help have always found it
)

forget_if_changed(__file__, "binary.py", "linktypes.py")

# What a frame is, for the ingest summary; also the index of the counter it adds to.
STAT_IPV4 = 0
STAT_IPV6 = 1
STAT_NON_IP = 2
STAT_BAD_IP = 3  # an IP version nibble, but the header is cut short or impossible: no addresses to count
N_STATS = 4

# EtherTypes (IEEE registry) the decoder follows.
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100  # 802.1Q customer tag
ETHERTYPE_QINQ = 0x88A8  # 802.1ad service tag
ETHERTYPE_QINQ_9100 = 0x9100  # service tags from before 802.1ad
ETHERTYPE_QINQ_9200 = 0x9200
ETHERTYPE_MPLS = 0x8847
ETHERTYPE_MPLS_MULTICAST = 0x8848
ETHERTYPE_PPPOE_SESSION = 0x8864
ETHERTYPE_MACSEC = 0x88E5
ETHERTYPE_NSH = 0x894F
ETHERTYPE_ARISTA = 0xD28B  # Arista vendor-specific protocol (a timestamp shim)
ETHERTYPE_UNKNOWN = 0  # what a PPP protocol without an EtherType maps to
ETHERTYPE_MAX_LENGTH = 1500  # a type field up to this is an 802.3 payload length instead

# Link-layer headers: their lengths and the offsets of the fields read in them.
ETHERNET_HEADER = 14
ETHERNET_TYPE_AT = 12
VLAN_TAG = 4  # tag control information, then the next EtherType
VLAN_TYPE_AT = 2
LLC_SNAP_HEADER = 8  # DSAP, SSAP, control, OUI (3), EtherType
LLC_SAP_SNAP = 0xAA
LLC_CONTROL_UI = 0x03
LLC_SNAP_TYPE_AT = 6
PPPOE_HEADER = 8  # version and type, code, session id, length, then the 2-byte PPP protocol
PPPOE_PROTOCOL_AT = 6
MPLS_LABEL = 4
MPLS_BOTTOM_AT = 2  # the bottom-of-stack bit is the lowest bit of a label entry's third byte
MPLS_LABEL_SHIFT = 12  # the label is a label entry's upper 20 bits
MPLS_LABEL_GAL = 13  # generic associated channel label: a control channel (G-ACh), not IP, follows
MPLS_LABEL_OAM_ALERT = 14  # OAM alert label: OAM, not IP, follows
MACSEC_SECTAG = 6  # TCI and association number, short length, packet number
MACSEC_SCI = 8  # the secure channel identifier, present when the TCI's SC bit is set
MACSEC_TCI_SC = 0x20
MACSEC_TCI_E_C = 0x0C  # encrypted or changed: the payload cannot be read
NSH_BASE_HEADER = 4
NSH_LENGTH_AT = 1  # the whole header's length in 4-byte words, in the byte's low 6 bits
NSH_LENGTH_MASK = 0x3F
NSH_NEXT_PROTOCOL_AT = 3
NSH_NEXT_IPV4 = 1
NSH_NEXT_IPV6 = 2
NSH_NEXT_ETHERNET = 3
ARISTA_SUBTYPE_TIMESTAMP = 1
ARISTA_VERSION_AT = 3
ARISTA_TIMESTAMP_64 = 0x10  # subtype, version, 32-bit seconds and nanoseconds
ARISTA_TIMESTAMP_48 = 0x20  # subtype, version, 48-bit timestamp
ARISTA_HEADER_64 = 12
ARISTA_HEADER_48 = 10
PPP_ADDRESS = 0xFF  # HDLC-like framing: all-stations address, unnumbered-information control
PPP_CONTROL = 0x03
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_MPLS = 0x0281
PPP_MPLS_MULTICAST = 0x0283
SLL_HEADER = 16
SLL_HATYPE_AT = 2
SLL_PROTOCOL_AT = 14
SLL2_HEADER = 20
SLL2_PROTOCOL_AT = 0
SLL2_HATYPE_AT = 8
# Linux ARPHRD_ device types for which a cooked header's protocol field is not an EtherType.
ARPHRD_IPGRE = 778  # a GRE protocol type: only IPv4, IPv6, MPLS and NSH lead to IP
ARPHRD_NETLINK = 824  # a netlink family: never IP
LOOPBACK_HEADER = 4  # the address family
LOOPBACK_PPP_HDLC = 0xFF03  # a BSD loopback frame that begins with PPP's address and control bytes
LOOPBACK_AF_MAX = 0x0600  # tshark's bound between a byte-shifted address family and an EtherType
AF_INET = 2
AF_INET6_BSD = 24  # NetBSD, OpenBSD
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30
C_HDLC_HEADER = 4  # address, control, protocol (an EtherType)
C_HDLC_PROTOCOL_AT = 2

# IP headers.
IPV4_MIN_HEADER = 20
IPV4_TOTAL_LENGTH_AT = 2
IPV4_FRAGMENT_AT = 6
IPV4_FRAGMENT_OFFSET = 0x1FFF
IPV4_PROTOCOL_AT = 9
IPV4_SRC_AT = 12
IPV4_DST_AT = 16
IPV6_HEADER = 40
IPV6_PAYLOAD_LENGTH_AT = 4
IPV6_NEXT_HEADER_AT = 6
IPV6_SRC_AT = 8
IPV6_DST_AT = 24
# IPv6 extension headers (IANA protocol numbers); all but the fragment header and AH give their length in 8-byte
# units, not counting the first 8.
IPPROTO_HOPOPTS = 0
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51  # length in 4-byte units, not counting the first 8 bytes
IPPROTO_DSTOPTS = 60
IPPROTO_MOBILITY = 135
IPPROTO_HIP = 139
IPPROTO_SHIM6 = 140
IPV6_FRAGMENT_HEADER = 8
IPV6_FRAGMENT_OFFSET = 0xFFF8
IPV6_MAX_EXTENSION_HEADERS = 32
# Transports that have ports.
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_DCCP = 33
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136
SCTP_COMMON_HEADER = 12  # tshark reads an SCTP packet's ports only with its whole common header
PORTS = 4  # source and destination port

MAX_SHIMS = 32  # tags and shims followed in one frame, so that a crafted loop ends

# What `network_layer` found: an IP header of either family, or none.
FAMILY_IPV4 = 4
FAMILY_IPV6 = 6
NOT_IP = 0


@njit(inline="always", cache=True)
def _ip_version(buf, o, end):
    """The IP version a header announces (4 or 6), or 0 where none is captured or it is neither."""
    if o >= end:
        return NOT_IP
    v = buf[o] >> 4
    if v == 4:
        return FAMILY_IPV4
    if v == 6:
        return FAMILY_IPV6
    return NOT_IP


@njit(inline="always", cache=True)
def _ipv6_only(buf, o, end):
    """What tshark's IPv6 dissector accepts: an IPv6 promise (EtherType, link type) holds only for version 6."""
    return FAMILY_IPV6 if _ip_version(buf, o, end) == FAMILY_IPV6 else NOT_IP


@njit(cache=True)
def _after_ethertype(buf, o, end, ethertype):  # noqa: PLR0911, PLR0912
    """Follow an EtherType through tags and shims (VLAN, PPPoE, MPLS, MACsec, NSH, Arista timestamps) to IP.

    Returns (offset of the IP header, its family) or (o, 0) where the frame carries no IP we can reach.
    """
    for _ in range(MAX_SHIMS):
        if ethertype == ETHERTYPE_IPV4:
            return o, _ip_version(buf, o, end)
        if ethertype == ETHERTYPE_IPV6:
            return o, _ipv6_only(buf, o, end)
        if (
            ethertype == ETHERTYPE_VLAN
            or ethertype == ETHERTYPE_QINQ
            or ethertype == ETHERTYPE_QINQ_9100
            or ethertype == ETHERTYPE_QINQ_9200
        ):
            if o + VLAN_TAG > end:
                return o, NOT_IP
            ethertype = be16(buf, o + VLAN_TYPE_AT)
            o += VLAN_TAG
        elif ethertype == ETHERTYPE_PPPOE_SESSION:
            if o + PPPOE_HEADER > end:
                return o, NOT_IP
            ethertype = _ppp_to_ethertype(be16(buf, o + PPPOE_PROTOCOL_AT))
            o += PPPOE_HEADER
        elif ethertype == ETHERTYPE_MPLS or ethertype == ETHERTYPE_MPLS_MULTICAST:  # pop to the bottom label
            while o + MPLS_LABEL <= end:
                bottom = buf[o + MPLS_BOTTOM_AT] & 1
                label = be32(buf, o) >> MPLS_LABEL_SHIFT
                o += MPLS_LABEL
                if bottom:
                    if label == MPLS_LABEL_GAL or label == MPLS_LABEL_OAM_ALERT:
                        return o, NOT_IP
                    return o, _ip_version(buf, o, end)
            return o, NOT_IP
        elif ethertype == ETHERTYPE_MACSEC:  # only an unencrypted, unmodified payload is readable
            if o + MACSEC_SECTAG + 2 > end or buf[o] & MACSEC_TCI_E_C:
                return o, NOT_IP
            o += MACSEC_SECTAG + MACSEC_SCI if buf[o] & MACSEC_TCI_SC else MACSEC_SECTAG
            if o + 2 > end:
                return o, NOT_IP
            ethertype = be16(buf, o)
            o += 2
        elif ethertype == ETHERTYPE_NSH:
            if o + NSH_BASE_HEADER > end:
                return o, NOT_IP
            next_protocol = buf[o + NSH_NEXT_PROTOCOL_AT]
            o += (np.int64(buf[o + NSH_LENGTH_AT]) & NSH_LENGTH_MASK) * 4
            if next_protocol == NSH_NEXT_IPV4:
                return o, _ip_version(buf, o, end)
            if next_protocol == NSH_NEXT_IPV6:
                return o, _ipv6_only(buf, o, end)
            if next_protocol != NSH_NEXT_ETHERNET or o + ETHERNET_HEADER > end:
                return o, NOT_IP
            ethertype = be16(buf, o + ETHERNET_TYPE_AT)
            o += ETHERNET_HEADER
        elif ethertype == ETHERTYPE_ARISTA:
            if o + 4 > end or be16(buf, o) != ARISTA_SUBTYPE_TIMESTAMP:
                return o, NOT_IP
            version = buf[o + ARISTA_VERSION_AT]
            if version == ARISTA_TIMESTAMP_64:
                o += ARISTA_HEADER_64
            elif version == ARISTA_TIMESTAMP_48:
                o += ARISTA_HEADER_48
            else:
                return o, NOT_IP
            if o + 2 > end:
                return o, NOT_IP
            ethertype = be16(buf, o)
            o += 2
        else:
            return o, NOT_IP
    return o, NOT_IP


@njit(inline="always", cache=True)
def _ip_or_mpls(buf, o, end, protocol):
    """A protocol number from a table that holds only IPv4, IPv6 and MPLS of the EtherTypes (Cisco HDLC's)."""
    if (
        protocol == ETHERTYPE_IPV4
        or protocol == ETHERTYPE_IPV6
        or protocol == ETHERTYPE_MPLS
        or protocol == ETHERTYPE_MPLS_MULTICAST
    ):
        return _after_ethertype(buf, o, end, protocol)
    return o, NOT_IP


@njit(inline="always", cache=True)
def _cooked(buf, o, end, hatype, protocol):
    """After a Linux cooked header: the protocol field is an EtherType unless the device type says otherwise."""
    if hatype == ARPHRD_NETLINK:
        return o, NOT_IP
    if hatype == ARPHRD_IPGRE and protocol != ETHERTYPE_NSH:  # GRE's protocol table adds NSH to Cisco HDLC's
        return _ip_or_mpls(buf, o, end, protocol)
    return _after_ethertype(buf, o, end, protocol)


@njit(inline="always", cache=True)
def _ppp_to_ethertype(protocol):
    if protocol == PPP_IPV4:
        return ETHERTYPE_IPV4
    if protocol == PPP_IPV6:
        return ETHERTYPE_IPV6
    if protocol == PPP_MPLS:
        return ETHERTYPE_MPLS
    if protocol == PPP_MPLS_MULTICAST:
        return ETHERTYPE_MPLS_MULTICAST
    return ETHERTYPE_UNKNOWN


@njit(cache=True)
def _ppp(buf, o, end):
    """PPP with or without HDLC-like address/control bytes and protocol-field compression."""
    if o + 2 <= end and buf[o] == PPP_ADDRESS and buf[o + 1] == PPP_CONTROL:
        o += 2
    if o >= end:
        return o, NOT_IP
    if buf[o] & 1:  # a compressed, one-byte protocol field
        protocol = np.int64(buf[o])
        o += 1
    else:
        if o + 2 > end:
            return o, NOT_IP
        protocol = be16(buf, o)
        o += 2
    return _after_ethertype(buf, o, end, _ppp_to_ethertype(protocol))


@njit(cache=True)
def network_layer(buf, p, end, linktype):  # noqa: PLR0911, PLR0912
    """Where the outermost IP header of a frame starts, and its family (0: not IP or not captured)."""
    if linktype == LINKTYPE_ETHERNET:
        if p + ETHERNET_HEADER > end:
            return p, NOT_IP
        ethertype = be16(buf, p + ETHERNET_TYPE_AT)
        o = p + ETHERNET_HEADER
        if ethertype <= ETHERTYPE_MAX_LENGTH:  # an 802.3 length: IP only behind LLC/SNAP
            if (
                o + LLC_SNAP_HEADER <= end
                and buf[o] == LLC_SAP_SNAP
                and buf[o + 1] == LLC_SAP_SNAP
                and buf[o + 2] == LLC_CONTROL_UI
            ):
                return _after_ethertype(buf, o + LLC_SNAP_HEADER, end, be16(buf, o + LLC_SNAP_TYPE_AT))
            return o, NOT_IP
        return _after_ethertype(buf, o, end, ethertype)
    if linktype == LINKTYPE_LINUX_SLL2:
        if p + SLL2_HEADER > end:
            return p, NOT_IP
        return _cooked(buf, p + SLL2_HEADER, end, be16(buf, p + SLL2_HATYPE_AT), be16(buf, p + SLL2_PROTOCOL_AT))
    if linktype == LINKTYPE_LINUX_SLL:
        if p + SLL_HEADER > end:
            return p, NOT_IP
        return _cooked(buf, p + SLL_HEADER, end, be16(buf, p + SLL_HATYPE_AT), be16(buf, p + SLL_PROTOCOL_AT))
    if linktype == LINKTYPE_RAW or linktype == LINKTYPE_RAW_12 or linktype == LINKTYPE_RAW_14:
        return p, _ip_version(buf, p, end)
    if linktype == LINKTYPE_IPV4:  # like tshark's IPv4 dissector, follow a version-6 header
        return p, _ip_version(buf, p, end)
    if linktype == LINKTYPE_IPV6:
        return p, _ipv6_only(buf, p, end)
    if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        return _loopback(buf, p, end, linktype)
    if linktype == LINKTYPE_PPP or linktype == LINKTYPE_PPP_HDLC:
        return _ppp(buf, p, end)
    if linktype == LINKTYPE_C_HDLC:
        if p + C_HDLC_HEADER > end:
            return p, NOT_IP
        return _ip_or_mpls(buf, p + C_HDLC_HEADER, end, be16(buf, p + C_HDLC_PROTOCOL_AT))
    return p, NOT_IP


@njit(cache=True)
def _loopback(buf, p, end, linktype):
    """BSD and OpenBSD loopback: an address family, in the writer's byte order for the former.

    For BSD loopback this is tshark's reading: PPP behind 0xFF03; a family in either byte order, in 16 or 32 bits;
    and a value above 1500, an EtherType.
    """
    if linktype == LINKTYPE_NULL and p + 2 <= end and be16(buf, p) == LOOPBACK_PPP_HDLC:
        return _ppp(buf, p, end)
    if p + LOOPBACK_HEADER > end:
        return p, NOT_IP
    o = p + LOOPBACK_HEADER
    family = be32(buf, p)
    if linktype == LINKTYPE_NULL:
        family = le32(buf, p)
        if family & 0xFFFF0000:
            if (family & 0xFF000000) == 0 and (family & 0x00FF0000) < (LOOPBACK_AF_MAX << 8):
                family >>= 16
            else:
                family = be32(buf, p)
        elif (family & 0xFF) == 0 and (family & 0xFF00) < LOOPBACK_AF_MAX:
            family >>= 8
        if family > ETHERTYPE_MAX_LENGTH:
            return _after_ethertype(buf, o, end, family)
    if family == AF_INET:
        return o, _ip_version(buf, o, end)
    if family == AF_INET6_BSD or family == AF_INET6_FREEBSD or family == AF_INET6_DARWIN:
        return o, _ipv6_only(buf, o, end)
    return o, NOT_IP


@njit(inline="always", cache=True)
def has_ports(proto):
    """Whether the transport header begins with 16-bit source and destination ports."""
    return (
        proto == IPPROTO_TCP
        or proto == IPPROTO_UDP
        or proto == IPPROTO_DCCP
        or proto == IPPROTO_SCTP
        or proto == IPPROTO_UDPLITE
    )


@njit(inline="always", cache=True)
def ports_header(proto):
    """How much of a transport header (one with ports) must be captured for tshark to show its ports."""
    return SCTP_COMMON_HEADER if proto == IPPROTO_SCTP else PORTS


@njit(inline="always", cache=True)
def ipv6_upper_layer(buf, t, end, proto):
    """Walk the IPv6 extension headers from t: (upper-layer protocol, where it starts, is it a first fragment).

    Only the first fragment of a datagram carries the ports. A header cut short ends the walk where it starts.
    """
    first_fragment = True
    for _ in range(IPV6_MAX_EXTENSION_HEADERS):
        if (
            proto == IPPROTO_HOPOPTS
            or proto == IPPROTO_ROUTING
            or proto == IPPROTO_DSTOPTS
            or proto == IPPROTO_MOBILITY
            or proto == IPPROTO_HIP
            or proto == IPPROTO_SHIM6
        ):
            if t + 2 > end:
                break
            proto = np.int64(buf[t])
            t += (np.int64(buf[t + 1]) + 1) * 8
        elif proto == IPPROTO_FRAGMENT:
            if t + IPV6_FRAGMENT_HEADER > end:
                break
            first_fragment = (be16(buf, t + 2) & IPV6_FRAGMENT_OFFSET) == 0
            proto = np.int64(buf[t])
            t += IPV6_FRAGMENT_HEADER
        elif proto == IPPROTO_AH:
            if t + 2 > end:
                break
            proto = np.int64(buf[t])
            t += (np.int64(buf[t + 1]) + 2) * 4
        else:
            break
    return proto, t, first_fragment
