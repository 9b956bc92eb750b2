package cx

import (
	"bytes"
	_ "embed"
	"fmt"

	"github.com/fiorix/go-diameter/v4/diam/dict"
)

// cxXML is the Cx/Dx dictionary: the four commands an I-/S-CSCF uses
// (UAR/SAR/LIR/MAR, TS 29.229 §6.1) and the AVPs they carry (§6.3). The
// base AVPs (Session-Id, Origin-Host, Experimental-Result...) come from
// go-diameter's base dictionary.
//
//go:embed cx.xml
var cxXML []byte

// go-diameter's state machine (package sm) advertises and checks the
// applications of dict.Default, so the Cx application is loaded there, once.
func init() {
	if err := dict.Default.Load(bytes.NewReader(cxXML)); err != nil {
		panic(fmt.Sprintf("cx: loading the Cx dictionary: %v", err))
	}
}
