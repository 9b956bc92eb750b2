package cx

import (
	"unicode/utf8"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
)

// AVP look-up by (code, vendor) in a decoded list; the values are checked
// for the expected type, so a peer sending the wrong type gets
// DIAMETER_INVALID_AVP_VALUE rather than a panic.

func find(avps []*diam.AVP, code, vendor uint32) *diam.AVP {
	for _, a := range avps {
		if a.Code == code && a.VendorID == vendor {
			return a
		}
	}
	return nil
}

func findAll(avps []*diam.AVP, code, vendor uint32) []*diam.AVP {
	var out []*diam.AVP
	for _, a := range avps {
		if a.Code == code && a.VendorID == vendor {
			out = append(out, a)
		}
	}
	return out
}

// str returns a string-like AVP's value; ok is false when absent, bad when
// present with a non-string type.
func str(a *diam.AVP) (s string, ok, bad bool) {
	if a == nil {
		return "", false, false
	}
	switch v := a.Data.(type) {
	case datatype.UTF8String:
		if !utf8.ValidString(string(v)) {
			return "", false, true
		}
		return string(v), true, false
	case datatype.OctetString:
		return string(v), true, false
	case datatype.DiameterIdentity:
		return string(v), true, false
	}
	return "", false, true
}

func u32(a *diam.AVP) (n uint32, ok, bad bool) {
	if a == nil {
		return 0, false, false
	}
	if bodyLen(a) != 4 { // go-diameter decodes a wrong length as 0
		return 0, false, true
	}
	switch v := a.Data.(type) {
	case datatype.Unsigned32:
		return uint32(v), true, false
	case datatype.Enumerated:
		return uint32(v), true, false
	}
	return 0, false, true
}

func octets(a *diam.AVP) (b []byte, ok, bad bool) {
	if a == nil {
		return nil, false, false
	}
	if v, isOct := a.Data.(datatype.OctetString); isOct {
		return []byte(v), true, false
	}
	return nil, false, true
}

func group(a *diam.AVP) []*diam.AVP {
	if a == nil {
		return nil
	}
	if g, ok := a.Data.(*diam.GroupedAVP); ok {
		return g.AVP
	}
	return nil
}

// tgpp makes a 3GPP AVP with the M and V bits (TS 29.229 §6.3).
func tgpp(code uint32, data datatype.Type) *diam.AVP {
	return diam.NewAVP(code, avp.Mbit|avp.Vbit, Vendor3GPP, data)
}

// base makes a base-protocol AVP with the M bit.
func base(code uint32, data datatype.Type) *diam.AVP {
	return diam.NewAVP(code, avp.Mbit, 0, data)
}

// vendorSpecificApp is the Vendor-Specific-Application-Id of every Cx
// message (TS 29.229 §6.1).
func vendorSpecificApp() *diam.AVP {
	return base(avpVendorSpecificApplicationID, &diam.GroupedAVP{AVP: []*diam.AVP{
		base(avpVendorID, datatype.Unsigned32(Vendor3GPP)),
		base(avpAuthApplicationID, datatype.Unsigned32(AppID)),
	}})
}

// experimental is an Experimental-Result with a TS 29.229 §6.2 code.
func experimental(code uint32) *diam.AVP {
	return base(avpExperimentalResult, &diam.GroupedAVP{AVP: []*diam.AVP{
		base(avpVendorID, datatype.Unsigned32(Vendor3GPP)),
		base(avpExperimentalResultCode, datatype.Unsigned32(code)),
	}})
}

// resultOf returns the result code of an answer and whether it came as
// an Experimental-Result.
func resultOf(avps []*diam.AVP) (code uint32, exp bool, ok bool) {
	if c, found, _ := u32(find(avps, avpResultCode, 0)); found {
		return c, false, true
	}
	if c, found, _ := u32(find(group(find(avps, avpExperimentalResult, 0)), avpExperimentalResultCode, 0)); found {
		return c, true, true
	}
	return 0, false, false
}

// bodyLen is the length of an AVP's data (RFC 6733 §4.1: Length counts
// the header, 8 or 12 bytes with the vendor id, and not the padding).
func bodyLen(a *diam.AVP) int {
	if a.Length == 0 { // built locally, not decoded
		return len(a.Data.Serialize())
	}
	if a.Flags&avp.Vbit != 0 {
		return a.Length - 12
	}
	return a.Length - 8
}
