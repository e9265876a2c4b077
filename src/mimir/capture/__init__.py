"""Reading network captures (pcap, pcapng, gzip) into per-bin flow tables."""
