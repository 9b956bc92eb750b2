package esp

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
)

// Wireshark names of our algorithms in the esp_sa UAT
// (epan/dissectors/packet-ipsec.c: esp_encryption_type_vals and
// esp_authentication_type_vals, Wireshark 3.6 to 4.x).
var (
	wiresharkEnc = map[EncAlg]string{
		EncNull:    "NULL",
		EncAESCBC:  "AES-CBC [RFC3602]",
		EncDES3CBC: "TripleDES-CBC [RFC2451]",
		EncAESGCM:  "AES-GCM with 16 octet ICV [RFC4106]", // key given as AES key || salt
	}
	wiresharkAuth = map[AuthAlg]string{
		AuthNull:          "NULL",
		AuthHMACSHA196:    "HMAC-SHA-1-96 [RFC2404]",
		AuthHMACMD596:     "HMAC-MD5-96 [RFC2403]",
		AuthHMACSHA256128: "HMAC-SHA-256-128 [RFC4868]",
	}
)

// KeyLogLine formats one SA as a line of Wireshark's esp_sa UAT file
// (~/.config/wireshark/esp_sa, or `tshark -o "uat:esp_sa:<line>"`):
//
//	"IPv4","10.0.0.1","10.0.0.2","0x00001000","AES-CBC [RFC3602]","0x<key>","HMAC-SHA-1-96 [RFC2404]","0x<key>"
//
// src and dst are the outer addresses of the packets the SA protects; an
// invalid (zero) netip.Addr or an unspecified one (0.0.0.0, ::) writes the
// wildcard "*". The protocol is IPv6 if either address is IPv6 (so ::, ::
// is "any IPv6 peer", the way an end that only knows the outer family logs
// its SAs), else IPv4. For aes-gcm the key is the AES key
// followed by the salt, as Wireshark expects. Wireshark 4.0 has no ESN
// support, so the ICVs of ESN SAs will not check there. The line has no
// newline.
func KeyLogLine(c Config, src, dst netip.Addr) (string, error) {
	enc, ok := wiresharkEnc[c.Encryption]
	if !ok {
		return "", fmt.Errorf("esp: key log: unknown encryption algorithm %q", c.Encryption)
	}
	auth, ok := wiresharkAuth[c.Integrity]
	if !ok {
		return "", fmt.Errorf("esp: key log: unknown integrity algorithm %q", c.Integrity)
	}
	proto := "IPv4"
	if src.Is6() && !src.Is4In6() || dst.Is6() && !dst.Is4In6() {
		proto = "IPv6"
	}
	addr := func(a netip.Addr) string {
		if !a.IsValid() || a.IsUnspecified() {
			return "*"
		}
		return a.Unmap().String()
	}
	key := func(k []byte) string {
		if len(k) == 0 {
			return "" // Wireshark: empty key for NULL
		}
		return "0x" + hex.EncodeToString(k)
	}
	var b strings.Builder
	for i, f := range []string{proto, addr(src), addr(dst), fmt.Sprintf("0x%08x", uint32(c.SPI)),
		enc, key(c.EncKey), auth, key(c.AuthKey)} {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(f)
		b.WriteByte('"')
	}
	return b.String(), nil
}

// KeyLog writes SA keys in Wireshark's esp_sa UAT format so captures can be
// decrypted. It is off unless a caller creates one: the lines are secrets.
// Log is safe for concurrent use; each line is written with one Write.
type KeyLog struct {
	mu sync.Mutex
	w  io.Writer
}

// NewKeyLog returns a KeyLog writing to w. A nil *KeyLog discards.
func NewKeyLog(w io.Writer) *KeyLog { return &KeyLog{w: w} }

// Log writes the line for one SA direction (see KeyLogLine) and a newline.
func (k *KeyLog) Log(c Config, src, dst netip.Addr) error {
	if k == nil {
		return nil
	}
	line, err := KeyLogLine(c, src, dst)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	_, err = io.WriteString(k.w, line+"\n")
	return err
}
