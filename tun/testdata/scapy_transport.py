#!/usr/bin/python3
"""A transport mode ESP peer (RFC 4303 §3.1.1) built from scapy's
SecurityAssociation, for tun's transport mode interop test: it answers one
protected SIP REGISTER with a protected 200 OK.

The keys come from imsec's key log (Wireshark's esp_sa format), nothing
else: the test proves that what imsec writes there is enough to open its
packets and to make packets it accepts.

Reads one JSON object on stdin:
  {"keylog": PATH,               imsec's esp_sa key log
   "carriage": "udp" | "ip",     ESP in UDP (RFC 3948) or plain ESP (IP protocol 50)
   "me": ADDR,                   our address (bind here)
   "imsec": ADDR,                imsec's address
   "to_imsec": SPI,              the SA we seal with (imsec's inbound)
   "from_imsec": SPI,            the SA we open with (imsec's outbound)
   "timeout": seconds}
Writes {"local": "ADDR:PORT"} once bound (port 0 for plain ESP), then,
after the exchange, one JSON line:
  {"request": TEXT, "sport": N, "dport": N, "checksum_ok": BOOL,
   "seq": N, "imsec_port": N, "error": STR or null}
"""
import csv
import json
import socket
import sys

from scapy.all import IP, UDP, Raw, raw
from scapy.layers.ipsec import ESP, SecurityAssociation

ENC = {"NULL": "NULL", "AES-CBC [RFC3602]": "AES-CBC", "TripleDES-CBC [RFC2451]": "3DES"}
AUTH = {"HMAC-SHA-1-96 [RFC2404]": "HMAC-SHA1-96", "HMAC-MD5-96 [RFC2403]": "HMAC-MD5-96",
        "HMAC-SHA-256-128 [RFC4868]": "SHA2-256-128"}


def key(v):
    v = v.strip()
    if v.lower().startswith("0x"):
        v = v[2:]
    return bytes.fromhex(v) or None


def read_keylog(path):
    sas = {}
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) < 8 or row[0].startswith("#"):
                continue
            spi = int(row[3], 16)
            sas[spi] = SecurityAssociation(ESP, spi=spi, crypt_algo=ENC[row[4]], crypt_key=key(row[5]),
                                           auth_algo=AUTH[row[6]], auth_key=key(row[7]))
    return sas


def answer(request):
    """A 200 OK to a REGISTER, with its Via, From, To, Call-ID and CSeq."""
    lines = request.split("\r\n")
    keep = [l for l in lines[1:] if l.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
    out = ["SIP/2.0 200 OK"]
    for l in keep:
        if l.lower().startswith("to:") and "tag=" not in l:
            l += ";tag=scapy"
        out.append(l)
    out += ["Expires: 600", "Content-Length: 0", "", ""]
    return "\r\n".join(out)


def main():
    cfg = json.load(sys.stdin)
    plain = cfg["carriage"] == "ip"
    if plain:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
        sock.bind((cfg["me"], 0))
        local = "%s:0" % cfg["me"]
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((cfg["me"], 0))
        local = "%s:%d" % sock.getsockname()
    print(json.dumps({"local": local}), flush=True)
    sock.settimeout(cfg["timeout"])
    result = {"error": None}
    try:
        while True:
            data, addr = sock.recvfrom(65535)
            if plain:
                data = data[(data[0] & 0x0F) * 4:]  # an IPv4 raw socket gives the IP header
            if len(data) >= 8 and addr[0] == cfg["imsec"]:
                break
        result["imsec_port"] = addr[1]
        sas = read_keylog(cfg["keylog"])
        pkt = IP(raw(IP(src=cfg["imsec"], dst=cfg["me"], proto=50) / Raw(data)))
        result["seq"] = pkt[ESP].seq
        plain_pkt = sas[cfg["from_imsec"]].decrypt(pkt)
        udp = plain_pkt[UDP]
        result["sport"], result["dport"] = udp.sport, udp.dport
        got = udp.chksum
        udp2 = plain_pkt.copy()
        del udp2[UDP].chksum
        want = IP(raw(udp2))[UDP].chksum
        result["checksum_ok"] = got == want
        request = bytes(udp.payload).decode()
        result["request"] = request
        reply = IP(src=cfg["me"], dst=cfg["imsec"]) / UDP(sport=udp.dport, dport=udp.sport) / Raw(answer(request).encode())
        sealed = sas[cfg["to_imsec"]].encrypt(IP(raw(reply)))
        esp = raw(sealed[ESP])
        if plain:
            sock.sendto(esp, (cfg["imsec"], 0))
        else:
            sock.sendto(esp, addr)
    except Exception as e:  # reported to the Go test
        result["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
