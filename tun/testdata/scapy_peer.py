#!/usr/bin/python3
"""An ESP-in-UDP peer (RFC 4303 tunnel mode in RFC 3948 UDP) built from
scapy's SecurityAssociation and a plain UDP socket, for tun's interop test.

scapy seals inner packets and sends the ESP over real UDP to the pump; it
opens (authenticates and decrypts) what the pump sends back. Nothing here
checks the inner packets: the Go test does.

Reads one JSON object on stdin:
  {"sessions": [{
     "pump": "127.0.0.1:PORT",           the pump's ESP-in-UDP socket
     "to_pump": SA, "from_pump": SA,     SA = {"spi", "enc", "enc_key", "auth", "auth_key"}
                                         (scapy algorithm names, hex keys)
     "inner_src": "100.64.0.2", "inner_dst": "100.64.0.1",
     "probes": [PROBE, ...]}],
   "timeout": seconds to wait for each reply}
PROBE is one of
  {"kind": "icmp", "id": N, "seq": N, "payload": HEX}   echo request, wait for the reply
  {"kind": "udp", "sport": N, "dport": N, "payload": HEX} datagram, wait for the reply
  {"kind": "tamper", "sport": N, "dport": N, "payload": HEX}
                                          a UDP probe with one ciphertext bit flipped:
                                          must not be answered
  {"kind": "replay"}                      the previous datagram again: must not be answered

Writes one JSON line per session first, {"session": i, "local": "ADDR:PORT"},
then one per probe:
  {"session": i, "probe": j, "sent_seq": N,
   "replies": [{"spi": N, "seq": N, "inner": HEX}, ...], "error": STR or null}
"""
import json
import socket
import sys

from scapy.all import IP, ICMP, UDP, Raw, raw
from scapy.layers.ipsec import ESP, SecurityAssociation


def make_sa(spec, tunnel_src, tunnel_dst, sport, dport):
    kwargs = dict(
        crypt_algo=spec["enc"],
        crypt_key=bytes.fromhex(spec["enc_key"]) or None,
        auth_algo=spec["auth"],
        auth_key=bytes.fromhex(spec["auth_key"]) or None,
        tunnel_header=IP(src=tunnel_src, dst=tunnel_dst),
        nat_t_header=UDP(sport=sport, dport=dport),
    )
    if spec["enc"] == "AES-GCM":
        kwargs["crypt_icv_size"] = 16
    return SecurityAssociation(ESP, spi=spec["spi"], **kwargs)


def main():
    cfg = json.load(sys.stdin)
    timeout = cfg["timeout"]
    for si, sess in enumerate(cfg["sessions"]):
        host, port = sess["pump"].rsplit(":", 1)
        pump = (host, int(port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        me = sock.getsockname()
        print(json.dumps({"session": si, "local": "%s:%d" % me}), flush=True)
        seal = make_sa(sess["to_pump"], me[0], pump[0], me[1], pump[1])
        open_ = make_sa(sess["from_pump"], pump[0], me[0], pump[1], me[1])
        last = None
        for pi, probe in enumerate(sess["probes"]):
            kind = probe["kind"]
            result = {"session": si, "probe": pi, "sent_seq": None, "replies": [], "error": None}
            if kind == "replay":
                data = last
            else:
                payload = bytes.fromhex(probe.get("payload", ""))
                inner = IP(src=sess["inner_src"], dst=sess["inner_dst"])
                if kind == "icmp":
                    inner = inner / ICMP(type=8, id=probe["id"], seq=probe["seq"]) / Raw(payload)
                else:
                    inner = inner / UDP(sport=probe["sport"], dport=probe["dport"]) / Raw(payload)
                inner = IP(raw(inner))  # lengths and checksums
                result["sent_seq"] = seal.seq_num
                data = bytearray(raw(seal.encrypt(inner)[ESP]))
                if kind == "tamper":
                    data[len(data) // 2] ^= 0x01
                data = bytes(data)
                if kind != "tamper":
                    last = data
            sock.sendto(data, pump)
            # Answered probes wait for one reply; the others wait to see
            # that none comes.
            sock.settimeout(timeout if kind in ("icmp", "udp") else 0.3)
            while True:
                try:
                    d, src = sock.recvfrom(65535)
                except socket.timeout:
                    if kind in ("icmp", "udp"):
                        result["error"] = "no reply within %ss" % timeout
                    break
                if d == b"\xff":
                    continue  # NAT-keepalive (RFC 3948 section 2.3)
                try:
                    esp = IP(src=src[0], dst=me[0]) / UDP(sport=src[1], dport=me[1]) / ESP(d)
                    spi, seq = esp[ESP].spi, esp[ESP].seq
                    plain = open_.decrypt(esp)  # checks the ICV first
                    result["replies"].append({"spi": spi, "seq": seq, "inner": raw(plain).hex()})
                except Exception as e:  # noqa: BLE001 - report, the Go side fails the test
                    result["error"] = "cannot open the pump's packet: %r" % e
                if kind in ("icmp", "udp"):
                    break
            print(json.dumps(result), flush=True)
        sock.close()


if __name__ == "__main__":
    main()
