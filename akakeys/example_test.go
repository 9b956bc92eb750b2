package akakeys_test

import (
	"errors"
	"fmt"

	"github.com/imsec/imsec/akakeys"
)

// A whole IMS AKA registration: the network issues a vector, the UE's USIM
// answers the digest challenge, the registrar verifies it, both sides derive
// the ESP keys; then a replay of the same challenge makes the USIM ask for a
// re-synchronisation. K, OPc and RAND are those of TS 35.208 test set 1, so
// RES, CK and IK are the published f2, f3 and f4.
func Example() {
	k := akakeys.K{0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc}
	opc := akakeys.OPc{0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf}
	rand := akakeys.RAND{0x23, 0x55, 0x3c, 0xbe, 0x96, 0x37, 0xa8, 0x9d, 0x21, 0x8a, 0xe6, 0x4d, 0xae, 0x47, 0xbf, 0x35}

	// Network: a vector for the next SQN, put in a challenge.
	hss := akakeys.NewMilenage(k, opc)
	var scheme akakeys.SQNScheme
	v := hss.Vector(rand, scheme.Next(akakeys.SQN{}), akakeys.AMF{0x80, 0x00})
	challenge := akakeys.Challenge{Realm: "ims.example", Nonce: akakeys.BuildNonce(v.RAND, v.AUTN, nil),
		Algorithm: akakeys.AlgorithmAKAv1MD5, QOP: akakeys.QOPAuth}

	// UE: parse the challenge, run the USIM, answer.
	usim, _ := akakeys.NewUSIM(k, opc, akakeys.USIMConfig{})
	ch, _ := akakeys.ParseChallenge(challenge.String())
	r, autn, _, _ := akakeys.ParseNonce(ch.Nonce)
	res, ck, ik, err := usim.Authenticate(r, autn)
	if err != nil {
		panic(err)
	}
	cred := akakeys.Credentials{Username: "alice@ims.example", Realm: ch.Realm, Nonce: ch.Nonce, URI: "sip:ims.example",
		Algorithm: ch.Algorithm, QOP: akakeys.QOPAuth, NC: 1, CNonce: "0a4f113b"}
	cred.SetResponse("REGISTER", res[:])

	// Registrar: parse the Authorization header and compare with XRES.
	got, _ := akakeys.ParseAuthorization(cred.String())
	fmt.Println("registrar verifies:", akakeys.Verify(&got, "REGISTER", v.XRES))
	fmt.Printf("RES %x\nCK  %x\nIK  %x\n", res, ck, ik)
	integrity := akakeys.IntegrityKeySHA1(ik)
	fmt.Printf("hmac-sha-1-96 key %x\n", integrity)

	// The same challenge again: the USIM refuses it and sends AUTS, from
	// which the network learns SQN_MS and restarts its sequence.
	_, _, _, err = usim.Authenticate(r, autn)
	var sf *akakeys.SyncFailureError
	fmt.Println("replay refused:", errors.As(err, &sf))
	sqnMS, _ := hss.VerifyAUTS(r, sf.AUTS)
	fmt.Printf("SQN_MS %x, next SQN %x\n", sqnMS, scheme.AfterResync(sqnMS))
	// Output:
	// registrar verifies: true
	// RES a54211d5e3ba50bf
	// CK  b40ba9a3c58b2a05bbf0d987b21bf8cb
	// IK  f769bcd751044604127672711c6d3441
	// hmac-sha-1-96 key f769bcd751044604127672711c6d344100000000
	// replay refused: true
	// SQN_MS 000000000021, next SQN 000000000042
}

// The vector of TS 35.208 test set 3: AUTN is SQN xor AK (f5) || AMF ||
// MAC-A (f1), and XRES is f2.
func ExampleMilenage_Vector() {
	k := akakeys.K{0xfe, 0xc8, 0x6b, 0xa6, 0xeb, 0x70, 0x7e, 0xd0, 0x89, 0x05, 0x75, 0x7b, 0x1b, 0xb4, 0x4b, 0x8f}
	op := akakeys.OP{0xdb, 0xc5, 0x9a, 0xdc, 0xb6, 0xf9, 0xa0, 0xef, 0x73, 0x54, 0x77, 0xb7, 0xfa, 0xdf, 0x83, 0x74}
	rand := akakeys.RAND{0x9f, 0x7c, 0x8d, 0x02, 0x1a, 0xcc, 0xf4, 0xdb, 0x21, 0x3c, 0xcf, 0xf0, 0xc7, 0xf7, 0x1a, 0x6a}
	sqn := akakeys.SQN{0x9d, 0x02, 0x77, 0x59, 0x5f, 0xfc}

	m := akakeys.NewMilenageOP(k, op)
	v := m.Vector(rand, sqn, akakeys.AMF{0x72, 0x5c})
	fmt.Printf("OPc  %x\nAUTN %x\nXRES %x\n", m.OPc(), v.AUTN, v.XRES)
	// Output:
	// OPc  1006020f0a478bf6b699f15c062e42b3
	// AUTN ae4a3a9b4c97725c9cabc3e99baf7281
	// XRES 8011c48c0c214ed2
}
