#!/usr/bin/python3
"""Seal ESP packets with scapy's SecurityAssociation, for esp's interop test.

Reads a JSON list of SAs on stdin:
  {"spi": int, "mode": "tunnel"|"transport", "enc": scapy crypt algo name,
   "enc_key": hex, "auth": scapy auth algo name, "auth_key": hex,
   "esn": bool, "esn_hi": int, "seq": int, "sizes": [int, ...]}
and writes one JSON object per packet on stdout:
  {"spi": int, "seq": int (64-bit when ESN), "nh": int,
   "esp": hex of the ESP packet (the UDP 4500 payload), "inner": hex of what
   ESP carries: the inner IP packet (tunnel) or the UDP datagram (transport)}

Note: scapy 2.5's AuthAlgo.sign() ignores ESN for ESP (the high 32 bits are
not appended to the ICV input as RFC 4303 section 2.2.1 requires), so only
AEAD (AES-GCM) SAs can be used with ESN here.
"""
import json
import sys

from scapy.all import IP, UDP, Raw, raw
from scapy.layers.ipsec import ESP, SecurityAssociation


def main():
    for sa_spec in json.load(sys.stdin):
        tunnel = sa_spec["mode"] == "tunnel"
        kwargs = dict(
            crypt_algo=sa_spec["enc"],
            crypt_key=bytes.fromhex(sa_spec["enc_key"]),
            auth_algo=sa_spec["auth"],
            auth_key=bytes.fromhex(sa_spec["auth_key"]) or None,
            nat_t_header=UDP(sport=4500, dport=4500),
            seq_num=sa_spec["seq"],
        )
        if sa_spec["enc"] == "AES-GCM":
            kwargs["crypt_icv_size"] = 16
        if sa_spec["esn"]:
            kwargs["esn_en"] = True
            kwargs["esn"] = sa_spec["esn_hi"]
        if tunnel:
            kwargs["tunnel_header"] = IP(src="192.0.2.1", dst="198.51.100.2")
        sa = SecurityAssociation(ESP, spi=sa_spec["spi"], **kwargs)
        for i, size in enumerate(sa_spec["sizes"]):
            body = bytes((i * 7 + j) & 0xFF for j in range(size))
            inner = IP(src="10.45.0.2", dst="10.45.0.1") / UDP(sport=40000, dport=40001) / Raw(body)
            inner = IP(raw(inner))  # fix lengths and checksums
            seq = sa.seq_num
            pkt = sa.encrypt(inner if not tunnel else inner)
            carried = raw(inner) if tunnel else raw(inner[UDP])
            if sa_spec["esn"]:
                seq |= sa_spec["esn_hi"] << 32
            print(json.dumps({
                "spi": sa_spec["spi"],
                "seq": seq,
                "nh": 4 if tunnel else 17,
                "esp": raw(pkt[ESP]).hex(),
                "inner": carried.hex(),
            }))


if __name__ == "__main__":
    main()
