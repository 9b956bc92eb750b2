package hss_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

// A subscriber is provisioned, two vectors are issued, the USIM reports a
// sync failure and the HSS re-synchronises.
func Example() {
	dir, _ := os.MkdirTemp("", "hss-example")
	defer os.RemoveAll(dir)
	store, err := hss.OpenSQLite(filepath.Join(dir, "subscribers.db"), hss.SQLiteOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	ctx := context.Background()

	// TS 35.208 Test Set 1 keys.
	sub := hss.Subscriber{
		IMPI:  "alice@ims.example",
		IMPUs: []string{"sip:alice@ims.example"},
		K:     akakeys.K{0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc},
		AMF:   akakeys.AMF{0x80, 0x00},
	}
	sub.SetOP(akakeys.OP{0xcd, 0xc2, 0x02, 0xd5, 0x12, 0x3e, 0x20, 0xf6, 0x2b, 0x6d, 0x67, 0x6a, 0xc7, 0x2c, 0xb3, 0x18})
	if err := store.Add(ctx, sub); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sub) // keys appear as fingerprints only

	h, _ := hss.New(store, hss.Config{})
	impi, _ := h.LookupIMPU(ctx, "sip:alice@ims.example")
	for range 2 {
		v, _ := h.Vector(ctx, impi)
		fmt.Printf("SQN %x\n", v.SQN)
	}

	// The USIM has SQN_MS = SEQ 1000, IND 3 and refuses the challenge.
	v, _ := h.Vector(ctx, impi)
	sqnMS := h.Scheme().Join(1000, 3)
	auts := akakeys.NewMilenage(sub.K, sub.OPc).AUTS(v.RAND, sqnMS)
	nv, _ := h.Resync(ctx, impi, v.RAND, auts)
	fmt.Printf("after resync: SQN %x\n", nv.SQN)

	auts[13] ^= 1 // a forged AUTS changes nothing
	_, err = h.Resync(ctx, impi, v.RAND, auts)
	fmt.Println(errors.Is(err, akakeys.ErrAUTSMAC))

	// Output:
	// hss.Subscriber{IMPI:"alice@ims.example" IMPUs:["sip:alice@ims.example"] K:sha256:836b7a93 OP:sha256:02f8f4fd OPc:sha256:839bddad AMF:8000 SQN:000000000000 Resyncs:0}
	// SQN 000000000021
	// SQN 000000000042
	// after resync: SQN 000000007d24
	// true
}
