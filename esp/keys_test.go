package esp

import (
	"bytes"
	"crypto/rand"
	"errors"
	"runtime"
	"testing"

	"github.com/imsec/imsec/esp/internal/hmacsha1"
)

// TestSharedKeys: SAs built on one prepared Keys seal and open exactly as
// SAs that expand the same keys themselves; a damaged packet is refused;
// Keys for other algorithms than the config names are refused.
func TestSharedKeys(t *testing.T) {
	ek := bytes.Repeat([]byte{0x11}, 16)
	ak := bytes.Repeat([]byte{0x22}, 20)
	keys, err := NewKeys(EncAESCBC, ek, AuthHMACSHA196, ak)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(spi SPI, shared bool) Config {
		c := Config{SPI: spi, Mode: Tunnel, Encryption: EncAESCBC, EncKey: ek, Integrity: AuthHMACSHA196, AuthKey: ak}
		if shared {
			c.Keys = keys
		}
		return c
	}
	inner := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, 1, 198, 51, 100, 2, 0, 1, 0, 2, 0, 8, 0, 0}
	for _, c := range []struct{ sealShared, openShared bool }{{true, false}, {false, true}, {true, true}} {
		out, err := NewOutbound(cfg(0x1000, c.sealShared))
		if err != nil {
			t.Fatal(err)
		}
		in, err := NewInbound(cfg(0x1000, c.openShared))
		if err != nil {
			t.Fatal(err)
		}
		// Two more SAs on the same keys: sharing changes nothing for them.
		if _, err := NewOutbound(cfg(0x2000, true)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, HeaderRoom+len(inner)+TailRoom)
		copy(buf[HeaderRoom:], inner)
		pkt, err := out.Seal(buf, HeaderRoom, len(inner), 4)
		if err != nil {
			t.Fatal(err)
		}
		bad := append([]byte(nil), pkt...)
		bad[len(bad)-1] ^= 1
		if _, _, _, err := in.Open(bad); err == nil {
			t.Fatalf("%+v: a flipped ICV bit was accepted", c)
		}
		got, _, _, err := in.Open(pkt)
		if err != nil || !bytes.Equal(got, inner) {
			t.Fatalf("%+v: %v, %x", c, err, got)
		}
	}
	wrong := cfg(0x3000, true)
	wrong.Integrity = AuthHMACMD596
	if _, err := NewInbound(wrong); err == nil {
		t.Fatal("Keys for hmac-sha-1-96 accepted by an hmac-md5-96 config")
	}
	if _, err := NewKeys(EncAESCBC, ek[:5], AuthHMACSHA196, ak); err == nil {
		t.Fatal("a 5-byte AES key was prepared")
	}
}

// TestIVsDifferAcrossSAs: every outbound SA makes its CBC IVs with the
// process's one IV key, so the per-SA nonce is what keeps two SAs (on the
// same keys, at the same sequence number) from sending the same IV; and
// within an SA no IV repeats.
func TestIVsDifferAcrossSAs(t *testing.T) {
	ek := bytes.Repeat([]byte{0x11}, 16)
	ak := bytes.Repeat([]byte{0x22}, 20)
	keys, err := NewKeys(EncAESCBC, ek, AuthHMACSHA196, ak)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for spi := SPI(0x1000); spi < 0x1004; spi++ {
		o, err := NewOutbound(Config{SPI: spi, Mode: Tunnel, Encryption: EncAESCBC, EncKey: ek, Integrity: AuthHMACSHA196, AuthKey: ak, Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		for seq := uint64(1); seq <= 64; seq++ {
			var iv, scratch [AESBlockSize]byte
			o.cbcIV(iv[:], seq, scratch[:])
			if seen[string(iv[:])] {
				t.Fatalf("SA %#x seq %d: IV %x seen before", spi, seq, iv)
			}
			seen[string(iv[:])] = true
		}
	}
}

// TestSharedKeysSACost: an SA built on shared keys allocates its own
// state and replay window only; the per-packet crypto state waits for
// the first packet (a P-CSCF builds many SAs that carry none).
func TestSharedKeysSACost(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not measurable under the race detector (it allocates on its own)")
	}
	ek, ak := make([]byte, 16), make([]byte, 20)
	keys, err := NewKeys(EncAESCBC, ek, AuthHMACSHA196, ak)
	if err != nil {
		t.Fatal(err)
	}
	spi := SPI(1000)
	cfg := Config{Mode: Tunnel, Encryption: EncAESCBC, EncKey: ek, Integrity: AuthHMACSHA196, AuthKey: ak, Keys: keys}
	in := testing.AllocsPerRun(100, func() {
		spi++
		cfg.SPI = spi
		if _, err := NewInbound(cfg); err != nil {
			t.Fatal(err)
		}
	})
	out := testing.AllocsPerRun(100, func() {
		spi++
		cfg.SPI = spi
		if _, err := NewOutbound(cfg); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations: inbound SA %.0f, outbound SA %.0f", in, out)
	if in > 1 || out > 1 {
		t.Fatalf("allocations per SA on shared keys: inbound %.0f (want 1: the SA; its window comes with its first packet), outbound %.0f (want 1)", in, out)
	}
}

// sharedKeysSA is an AES-CBC/hmac-sha-1-96 SA pair on prepared Keys with
// random keys, as a P-CSCF's SA set builds them.
func sharedKeysSA(t *testing.T) (*Keys, *Outbound, *Inbound) {
	t.Helper()
	ek, ak := make([]byte, 16), make([]byte, 20)
	rand.Read(ek)
	rand.Read(ak)
	keys, err := NewKeys(EncAESCBC, ek, AuthHMACSHA196, ak)
	if err != nil {
		t.Fatal(err)
	}
	out, in := mustSA(t, Config{SPI: 0x1234, Mode: Tunnel, Encryption: EncAESCBC, EncKey: ek, Integrity: AuthHMACSHA196, AuthKey: ak, Keys: keys})
	return keys, out, in
}

// TestLazySAState: the AES key schedule and the replay window are made by
// the first packet, not with the keys and the SA; then the SA works as any
// other.
func TestLazySAState(t *testing.T) {
	keys, out, in := sharedKeysSA(t)
	if keys.a.aesCBC.Load() != nil || keys.a.sha1.Load() != nil || in.win.bits != nil {
		t.Fatal("key schedule, HMAC pads or replay window made before any packet")
	}
	payload := []byte("first packet")
	buf := make([]byte, HeaderRoom+len(payload)+TailRoom)
	copy(buf[HeaderRoom:], payload)
	pkt, err := out.Seal(buf, HeaderRoom, len(payload), 4)
	if err != nil {
		t.Fatal(err)
	}
	if keys.a.aesCBC.Load() == nil || (hmacsha1.Accelerated() && keys.a.sha1.Load() == nil) {
		t.Fatal("no key schedule or HMAC pads after Seal")
	}
	replay := append([]byte(nil), pkt...)
	got, _, _, err := in.Open(pkt)
	if err != nil || string(got) != string(payload) {
		t.Fatalf("Open: %q, %v", got, err)
	}
	if in.win.bits == nil {
		t.Fatal("no replay window after the first packet")
	}
	if _, _, _, err := in.Open(replay); !errors.Is(err, ErrReplay) {
		t.Fatalf("the same packet again: %v, want ErrReplay", err)
	}
}

// TestIdleDropsPrepared: Idle on one SA drops the key schedule and HMAC
// pads its Keys prepared, for every SA sharing them; the next packet
// prepares them again, and the SAs go on sealing and opening, and refusing
// a damaged or replayed packet, as before. Idle while other goroutines
// seal and open loses no packet (run under -race in CI).
func TestIdleDropsPrepared(t *testing.T) {
	keys, out, in := sharedKeysSA(t)
	roundTrip := func(payload string) {
		t.Helper()
		pkt := seal(t, out, []byte(payload), 4)
		bad := append([]byte(nil), pkt...)
		bad[len(bad)-1] ^= 1
		if _, _, _, err := in.Open(bad); !errors.Is(err, ErrAuth) {
			t.Fatalf("a flipped ICV bit: %v, want ErrAuth", err)
		}
		replay := append([]byte(nil), pkt...)
		if got, _, _, err := in.Open(pkt); err != nil || string(got) != payload {
			t.Fatalf("Open: %q, %v", got, err)
		}
		if _, _, _, err := in.Open(replay); !errors.Is(err, ErrReplay) {
			t.Fatalf("the same packet again: %v, want ErrReplay", err)
		}
	}
	roundTrip("before idle")
	if keys.a.aesCBC.Load() == nil {
		t.Fatal("no key schedule after a packet")
	}
	if !out.Prepared() || !in.Prepared() {
		t.Fatal("Prepared is false after a packet")
	}
	in.Idle() // the inbound SA: the outbound one shares the keys
	if keys.a.aesCBC.Load() != nil || keys.a.sha1.Load() != nil || out.Prepared() || in.Prepared() {
		t.Fatal("Idle kept the key schedule or the HMAC pads")
	}
	if in.win.bits == nil || in.Highest() != 1 {
		t.Fatal("Idle touched the replay window")
	}
	roundTrip("after idle")
	if keys.a.aesCBC.Load() == nil || (hmacsha1.Accelerated() && keys.a.sha1.Load() == nil) {
		t.Fatal("the packet after Idle did not prepare the keys again")
	}

	// Idle racing with sealing and opening.
	const n = 2000
	pkts := make(chan []byte, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-pkts:
				return
			default:
				out.Idle()
				runtime.Gosched()
			}
		}
	}()
	opened := 0
	for i := range n {
		payload := []byte{0x45, byte(i), byte(i >> 8)} // tunnel mode: an IPv4 first byte
		pkt := seal(t, out, payload, 4)
		if got, _, _, err := in.Open(pkt); err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("packet %d with Idle racing: %x, %v", i, got, err)
		}
		opened++
	}
	pkts <- nil
	<-done
	if opened != n {
		t.Fatalf("%d of %d packets opened", opened, n)
	}
}

// TestScratchOnlySAsSharePool: an AES-CBC/hmac-sha-1-96 or GCM SA, whose
// packets need only scratch space, takes its state from the shared pool and
// fills no pool of its own; a 3DES SA (a CBC mode per state) keeps its own.
func TestScratchOnlySAsSharePool(t *testing.T) {
	for _, c := range []struct {
		enc     EncAlg
		ekLen   int
		auth    AuthAlg
		akLen   int
		scratch bool
	}{
		{EncAESCBC, 16, AuthHMACSHA196, 20, hmacsha1.Accelerated()},
		{EncAESGCM, 20, AuthNull, 0, true},
		{EncDES3CBC, 24, AuthHMACSHA196, 20, false},
		{EncAESCBC, 16, AuthHMACMD596, 16, false},
	} {
		ek, ak := make([]byte, c.ekLen), make([]byte, c.akLen)
		rand.Read(ek)
		rand.Read(ak)
		out, in := mustSA(t, Config{SPI: 0x1234, Mode: Tunnel, Encryption: c.enc, EncKey: ek, Integrity: c.auth, AuthKey: ak})
		payload := []byte("one packet")
		pkt := seal(t, out, payload, 4)
		if got, _, _, err := in.Open(pkt); err != nil || string(got) != string(payload) {
			t.Fatalf("%s/%s: Open: %q, %v", c.enc, c.auth, got, err)
		}
		if out.scratchOnly() != c.scratch || in.scratchOnly() != c.scratch {
			t.Fatalf("%s/%s: scratchOnly %v, want %v", c.enc, c.auth, out.scratchOnly(), c.scratch)
		}
		own := out.pool != nil || in.pool != nil
		if c.scratch && own {
			t.Errorf("%s/%s: the SA filled a pool of its own", c.enc, c.auth)
		}
	}
}

// TestSAMemory holds what a P-CSCF keeps per idle SA to a budget: a UE has
// six (signalling and media, both ways) that mostly carry nothing, so their
// size is most of its ESP memory. Measured as bytes allocated per SA pair
// and per set of keys, which round up to the runtime's size classes.
// Before the budget the keys took 328 bytes in six objects (struct, two key
// copies, a MAC closure, the list of key lengths) and a pair 256; now one
// struct of 192 (and the 8 of Keys) and two of 80.
func TestSAMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation sizes are not measurable under the race detector")
	}
	ek, ak := make([]byte, 16), make([]byte, 20)
	bytesPer := func(n int, f func()) float64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range n {
			f()
		}
		runtime.ReadMemStats(&after)
		return float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
	}
	const n = 1000
	keys := make([]*Keys, 0, n)
	perKeys := bytesPer(n, func() {
		k, err := NewKeys(EncAESCBC, ek, AuthHMACSHA196, ak)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	})
	outs, ins := make([]*Outbound, 0, n), make([]*Inbound, 0, n)
	cfg := Config{SPI: 0x1234, Mode: Tunnel, Encryption: EncAESCBC, EncKey: ek, Integrity: AuthHMACSHA196, AuthKey: ak, Keys: keys[0]}
	perPair := bytesPer(n, func() {
		o, in := mustSA(t, cfg)
		outs, ins = append(outs, o), append(ins, in)
	})
	t.Logf("keys %.0f B, SA pair %.0f B", perKeys, perPair)
	if perKeys > 208 {
		t.Errorf("a set of keys takes %.0f bytes, budget 208", perKeys)
	}
	if perPair > 168 {
		t.Errorf("an SA pair takes %.0f bytes, budget 168", perPair)
	}
	runtime.KeepAlive(outs)
	runtime.KeepAlive(ins)
}

// TestNewKeysOneObject: prepared keys are one object (a P-CSCF holds two
// per UE; the algorithms were a second).
func TestNewKeysOneObject(t *testing.T) {
	ek, ak := make([]byte, 16), make([]byte, 20)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := NewKeys(EncAESCBC, ek, AuthHMACSHA196, ak); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("NewKeys(aes-cbc, hmac-sha-1-96): %.0f allocations, want 1", n)
	}
}

// TestKeysRaw: Raw gives back the keys as given, for every encryption
// algorithm (AES-GCM's with its salt), as copies.
func TestKeysRaw(t *testing.T) {
	for _, c := range []struct {
		enc   EncAlg
		ekLen int
		auth  AuthAlg
		akLen int
	}{
		{EncAESCBC, 16, AuthHMACSHA196, 20},
		{EncAESCBC, 32, AuthHMACSHA256128, 32},
		{EncDES3CBC, 24, AuthHMACMD596, 16},
		{EncAESGCM, 36, AuthNull, 0},
		{EncNull, 0, AuthHMACSHA196, 20},
	} {
		ek, ak := make([]byte, c.ekLen), make([]byte, c.akLen)
		rand.Read(ek)
		rand.Read(ak)
		keys, err := NewKeys(c.enc, ek, c.auth, ak)
		if err != nil {
			t.Fatalf("%s/%s: %v", c.enc, c.auth, err)
		}
		gotE, gotA := keys.Raw()
		if !bytes.Equal(gotE, ek) || !bytes.Equal(gotA, ak) {
			t.Fatalf("%s/%s: Raw = %x, %x; want %x, %x", c.enc, c.auth, gotE, gotA, ek, ak)
		}
		if len(gotE) > 0 {
			gotE[0] ^= 1
			if again, _ := keys.Raw(); !bytes.Equal(again, ek) {
				t.Fatalf("%s: writing Raw's slice changed the keys", c.enc)
			}
		}
	}
}
