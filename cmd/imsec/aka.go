package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/imsec/imsec/akakeys"
)

func init() {
	register(command{
		name:  "aka",
		usage: "aka vector|auts|ue [flags]",
		short: "AKA arithmetic: build a vector or an AUTS, or play the USIM",
		run:   runAKA,
	})
}

const akaHelp = `Usage: imsec aka vector|auts|ue [flags]

3GPP AKA with Milenage (TS 35.206, TS 33.102 §6.3) from the command line,
for checking an HSS, a UE or a SIPp scenario by hand. Keys and values are
hex (an optional 0x prefix is allowed); results are one JSON object of
lower-case hex strings on stdout. The subscriber is --k with either --op or
--opc (OPc = E_K(OP) xor OP).

Subcommands:

  vector  the network side: build the authentication vector for RAND, SQN
          and AMF, printing opc, mac_a (f1), mac_s (f1*), xres (f2), ck (f3),
          ik (f4), ak (f5), ak_star (f5*) and autn = SQN^AK || AMF || MAC-A.
    imsec aka vector --k 465b5ce8b199b49faa5f0a2ee238a6bc \
      --op cdc202d5123e20f62b6d676ac72cb318 \
      --rand 23553cbe9637a89d218ae64dae47bf35 --sqn ff9bb4d0b607 --amf b9b9

  auts    the token a USIM sends on a synchronisation failure:
          AUTS = SQN_MS^AK* || MAC-S, MAC-S = f1*(SQN_MS, RAND, AMF=0000).
    imsec aka auts --k 465b5ce8b199b49faa5f0a2ee238a6bc \
      --opc cd63cb71954a9f4e48a5994e37a02baf \
      --rand 23553cbe9637a89d218ae64dae47bf35 --sqn-ms 000000000021

  ue      play the USIM: recover SQN with AK, verify MAC-A (computed with the
          AMF inside AUTN), check that SQN is fresh (TS 33.102 Annex C.2, IND
          of 5 bits, delta 2^28) and print res, ck and ik. The USIM starts
          fresh (every SQN with 0 < SEQ <= 2^28 is fresh) unless --sqn-ms
          gives the highest SQN it has already accepted. --amf, if given,
          must equal the AMF inside AUTN (like SIPp's aka_AMF).
    imsec aka ue --k 465b5ce8b199b49faa5f0a2ee238a6bc \
      --opc cd63cb71954a9f4e48a5994e37a02baf \
      --rand 23553cbe9637a89d218ae64dae47bf35 \
      --autn 55f328b43577b9b94a9ffac354dfafb3 --sqn-ms ff9bb4d0b5e7

Exit status: 0 success; 2 bad usage; for ue, 1 when MAC-A does not verify or
AUTN's AMF differs from --amf, 3 on a synchronisation failure (stdout then
holds {"auts": "..."} for the network, stderr says why).

Run 'imsec aka SUBCOMMAND --help' for the flags of one subcommand.
`

func runAKA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("missing subcommand: want vector, auts or ue (see 'imsec aka --help')")
	}
	var err error
	switch sub := args[0]; sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, akaHelp)
		return flag.ErrHelp
	case "vector":
		err = akaVector(args[1:], stdout)
	case "auts":
		err = akaAUTS(args[1:], stdout)
	case "ue":
		err = akaUE(args[1:], stdout)
	default:
		return usageErrorf("unknown subcommand %q: want vector, auts or ue", sub)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) && errors.Is(err, errUsage) {
		return usageErrorf("%s: %s", args[0], trimUsage(err))
	}
	return err
}

// subscriberFlags are --k, --op and --opc, common to every subcommand.
type subscriberFlags struct{ k, op, opc *string }

func addSubscriberFlags(fs *flag.FlagSet) subscriberFlags {
	return subscriberFlags{
		k:   fs.String("k", "", "subscriber key K, 16 bytes (required)"),
		op:  fs.String("op", "", "operator variant OP, 16 bytes (this or --opc)"),
		opc: fs.String("opc", "", "OPc = E_K(OP) xor OP, 16 bytes (this or --op)"),
	}
}

// keys checks the subscriber flags: K, and exactly one of OP and OPc. op is
// nil when OPc was given; opc is always set (derived from OP if need be).
func (s subscriberFlags) keys() (k akakeys.K, op *akakeys.OP, opc akakeys.OPc, err error) {
	if err := hexFields(hexField{"k", *s.k, k[:]}); err != nil {
		return k, nil, opc, err
	}
	switch {
	case *s.op != "" && *s.opc != "":
		return k, nil, opc, usageErrorf("give --op or --opc, not both")
	case *s.op == "" && *s.opc == "":
		return k, nil, opc, usageErrorf("--op or --opc is required")
	case *s.op != "":
		op = new(akakeys.OP)
		if err := hexFields(hexField{"op", *s.op, op[:]}); err != nil {
			return k, nil, opc, err
		}
		return k, op, akakeys.ComputeOPc(k, *op), nil
	}
	err = hexFields(hexField{"opc", *s.opc, opc[:]})
	return k, nil, opc, err
}

// milenage checks the subscriber flags and returns K and OPc.
func (s subscriberFlags) milenage() (akakeys.K, akakeys.OPc, error) {
	k, _, opc, err := s.keys()
	return k, opc, err
}

func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

func h(b []byte) string { return hex.EncodeToString(b) }

func akaVector(args []string, stdout io.Writer) error {
	fs := newFlagSet("aka vector", "aka vector --k HEX (--op HEX | --opc HEX) --rand HEX --sqn HEX --amf HEX", stdout)
	sub := addSubscriberFlags(fs)
	randF := fs.String("rand", "", "RAND, 16 bytes (required)")
	sqnF := fs.String("sqn", "", "SQN, 6 bytes (required)")
	amfF := fs.String("amf", "", "AMF, 2 bytes (required)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	k, opc, err := sub.milenage()
	if err != nil {
		return err
	}
	var r akakeys.RAND
	var sqn akakeys.SQN
	var amf akakeys.AMF
	if err := hexFields(hexField{"rand", *randF, r[:]}, hexField{"sqn", *sqnF, sqn[:]}, hexField{"amf", *amfF, amf[:]}); err != nil {
		return err
	}
	m := akakeys.NewMilenage(k, opc)
	macA, macS := m.F1(r, sqn, amf)
	_, _, _, ak := m.F2345(r)
	akStar := m.F5Star(r)
	v := m.Vector(r, sqn, amf)
	return writeJSON(stdout, struct {
		OPc    string `json:"opc"`
		MACA   string `json:"mac_a"`
		MACS   string `json:"mac_s"`
		XRES   string `json:"xres"`
		CK     string `json:"ck"`
		IK     string `json:"ik"`
		AK     string `json:"ak"`
		AKStar string `json:"ak_star"`
		AUTN   string `json:"autn"`
	}{h(opc[:]), h(macA[:]), h(macS[:]), h(v.XRES[:]), h(v.CK[:]), h(v.IK[:]), h(ak[:]), h(akStar[:]), h(v.AUTN[:])})
}

func akaAUTS(args []string, stdout io.Writer) error {
	fs := newFlagSet("aka auts", "aka auts --k HEX (--op HEX | --opc HEX) --rand HEX --sqn-ms HEX", stdout)
	sub := addSubscriberFlags(fs)
	randF := fs.String("rand", "", "RAND of the refused challenge, 16 bytes (required)")
	sqnMSF := fs.String("sqn-ms", "", "SQN_MS, the highest SQN the USIM accepted, 6 bytes (required)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	k, opc, err := sub.milenage()
	if err != nil {
		return err
	}
	var r akakeys.RAND
	var sqnMS akakeys.SQN
	if err := hexFields(hexField{"rand", *randF, r[:]}, hexField{"sqn-ms", *sqnMSF, sqnMS[:]}); err != nil {
		return err
	}
	a := akakeys.NewMilenage(k, opc).AUTS(r, sqnMS)
	return writeJSON(stdout, struct {
		AUTS string `json:"auts"`
	}{h(a[:])})
}

func akaUE(args []string, stdout io.Writer) error {
	fs := newFlagSet("aka ue", "aka ue --k HEX (--op HEX | --opc HEX) --rand HEX --autn HEX [--amf HEX] [--sqn-ms HEX]", stdout)
	sub := addSubscriberFlags(fs)
	randF := fs.String("rand", "", "RAND of the challenge, 16 bytes (required)")
	autnF := fs.String("autn", "", "AUTN of the challenge, 16 bytes (required)")
	amfF := fs.String("amf", "", "if set, the AMF (2 bytes) AUTN must carry")
	sqnMSF := fs.String("sqn-ms", "", "the highest SQN this USIM has accepted, 6 bytes (default: a fresh USIM)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	k, opc, err := sub.milenage()
	if err != nil {
		return err
	}
	var r akakeys.RAND
	var autn akakeys.AUTN
	if err := hexFields(hexField{"rand", *randF, r[:]}, hexField{"autn", *autnF, autn[:]}); err != nil {
		return err
	}
	var wantAMF []byte
	if *amfF != "" {
		if wantAMF, err = hexArg("amf", *amfF, len(akakeys.AMF{})); err != nil {
			return err
		}
	}
	usim, err := akakeys.NewUSIM(k, opc, akakeys.USIMConfig{})
	if err != nil {
		return err
	}
	if *sqnMSF != "" {
		b, err := hexArg("sqn-ms", *sqnMSF, len(akakeys.SQN{}))
		if err != nil {
			return err
		}
		st := usim.State()
		seq, ind := akakeys.SQNScheme{IndBits: st.IndBits}.Split(akakeys.SQN(b))
		st.SEQ[ind] = seq
		if err := usim.SetState(st); err != nil {
			return err
		}
	}
	if wantAMF != nil && (autn[6] != wantAMF[0] || autn[7] != wantAMF[1]) {
		return &exitError{code: 1, err: fmt.Errorf("AUTN carries AMF %x, --amf wants %x", autn[6:8], wantAMF)}
	}

	res, ck, ik, err := usim.Authenticate(r, autn)
	var sf *akakeys.SyncFailureError
	switch {
	case errors.Is(err, akakeys.ErrMACFailure):
		return &exitError{code: 1, err: errors.New("MAC failure: MAC-A in AUTN does not verify with this K, OPc and RAND (the challenge is not from this subscriber's network)")}
	case errors.As(err, &sf):
		if werr := writeJSON(stdout, struct {
			AUTS string `json:"auts"`
		}{h(sf.AUTS[:])}); werr != nil {
			return werr
		}
		return &exitError{code: 3, err: fmt.Errorf("synchronisation failure: %s; auts=%x (SQN_MS %x)", sf.Reason, sf.AUTS, sf.SQNMS)}
	case err != nil:
		return err
	}
	return writeJSON(stdout, struct {
		RES string `json:"res"`
		CK  string `json:"ck"`
		IK  string `json:"ik"`
	}{h(res[:]), h(ck[:]), h(ik[:])})
}
