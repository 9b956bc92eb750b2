package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/kamailiotest"
	"github.com/imsec/imsec/internal/loopback"
)

// TestPCSCFProxyRoleWithKamailio: the commands as an operator joins imsec
// to an IMS core: 'imsec hss' as the HSS, Kamailio's S-CSCF peered to it
// over Cx, two 'imsec pcscf --scscf' in front of the S-CSCF, and 'imsec
// ue' registering through them and calling each other.
func TestPCSCFProxyRoleWithKamailio(t *testing.T) {
	kamailiotest.Skip(t)
	db := filepath.Join(t.TempDir(), "hss.db")
	for _, u := range []string{"alice", "bob"} {
		if code, _, errs := runCLI(t, "sub", "add", "--db", db, "--impi", u+"@ims.example", "--impu", "sip:"+u+"@ims.example", "--k", tsK, "--op", tsOP); code != 0 {
			t.Fatal(errs)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	addr := loopback.Random()
	hssAddr := netip.AddrPortFrom(addr, 3868)
	h := startCLI(t, ctx, "hss", "hss", "--db", db, "--listen", hssAddr.String(), "--origin-host", addr.String(), "--origin-realm", "ims.example")
	h.waitLine(t, "Diameter Cx on", 10*time.Second)
	kam := kamailiotest.Start(t, kamailiotest.Config{Addr: addr, HSS: hssAddr, Realm: "ims.example"})

	scscf := "sip:" + kam.SIP.String()
	pA := startPCSCF(t, ctx, "P-CSCF A", "--domain", "ims.example", "--scscf", scscf, "--pool", "100.64.1.0/24")
	pA.waitLine(t, "proxy role", 5*time.Second)
	pB := startPCSCF(t, ctx, "P-CSCF B", "--domain", "ims.example", "--scscf", scscf, "--pool", "100.64.2.0/24")

	bob := startCLI(t, ctx, "bob", "ue", "--pcscf", pB.sip, "--pcscf-esp", pB.esp, "--impi", "bob@ims.example", "--impu", "sip:bob@ims.example", "--k", tsK, "--op", tsOP)
	bob.waitLine(t, "200 OK: registered", 30*time.Second)
	alice := startCLI(t, ctx, "alice", "ue", "call", "sip:bob@ims.example", "--duration", "1s", "--pcscf", pA.sip, "--pcscf-esp", pA.esp,
		"--impi", "alice@ims.example", "--impu", "sip:alice@ims.example", "--k", tsK, "--op", tsOP)
	if code := alice.wait(t, time.Minute); code != 0 || !strings.Contains(alice.out.String(), "call with sip:bob@ims.example (caller)") {
		t.Fatalf("call: exit %d\n%s\n%s\nP-CSCF A:\n%s\nP-CSCF B:\n%s", code, alice.out.String(), alice.err.String(), pA.out.String(), pB.out.String())
	}
	bob.waitLine(t, "call with sip:alice@ims.example (callee)", 10*time.Second)
	for _, want := range []string{"REGISTER sip:alice@ims.example", "401 from the S-CSCF", "200 OK (from the S-CSCF)", "B2BUA towards S-CSCF"} {
		if !strings.Contains(pA.out.String(), want) {
			t.Errorf("P-CSCF A's ladder lacks %q:\n%s", want, pA.out.String())
		}
	}
}

func TestPCSCFProxyRoleUsage(t *testing.T) {
	for _, args := range [][]string{
		{"pcscf", "--domain", "ims.example", "--scscf", "sip:127.0.0.1:5060", "--db", "x.db"},
		{"pcscf", "--domain", "ims.example", "--scscf", "sip:127.0.0.1:5060", "--hss", "127.0.0.1:3868"},
		{"pcscf", "--domain", "ims.example", "--db", "x.db", "--visited-network", "v"},
		{"pcscf", "--domain", "ims.example", "--scscf", "tel:+1555", "--sip", "127.0.0.1:0", "--esp", "127.0.0.1:0"},
		{"pcscf", "--domain", "ims.example", "--scscf", "sip:127.0.0.1:99999", "--sip", "127.0.0.1:0", "--esp", "127.0.0.1:0"},
	} {
		code, _, errs := runCLI(t, args...)
		if code != 2 || !strings.Contains(errs, "scscf") && !strings.Contains(errs, "S-CSCF") && !strings.Contains(errs, "visited") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
}
