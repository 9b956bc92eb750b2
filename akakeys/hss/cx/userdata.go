package cx

import (
	"encoding/xml"
	"errors"
)

// The User-Data AVP of an SAA carries the subscriber's IMS subscription as
// XML, TS 29.228 Annex E (CxDataType.xsd): one IMSSubscription with the
// PrivateID and ServiceProfiles listing PublicIdentity elements. imsec has
// one service profile per subscriber, with every IMPU in it and no
// initial filter criteria.

// IMSSubscription is the root element of the Cx User-Data (TS 29.228 §E.2).
type IMSSubscription struct {
	XMLName        xml.Name         `xml:"IMSSubscription"`
	PrivateID      string           `xml:"PrivateID"`
	ServiceProfile []ServiceProfile `xml:"ServiceProfile"`
}

// ServiceProfile lists public identities sharing one profile (TS 29.228 §E.3).
type ServiceProfile struct {
	PublicIdentity []PublicIdentity `xml:"PublicIdentity"`
}

// PublicIdentity is one IMPU (TS 29.228 §E.3, tPublicIdentity).
type PublicIdentity struct {
	BarringIndication *bool  `xml:"BarringIndication,omitempty"`
	Identity          string `xml:"Identity"`
}

// errBadUserData: the User-Data of an SAA is not an IMSSubscription.
var errBadUserData = errors.New("cx: User-Data is not a TS 29.228 IMSSubscription")

// MarshalUserData returns the User-Data XML for impi with impus in one
// service profile.
func MarshalUserData(impi string, impus []string) []byte {
	sub := IMSSubscription{PrivateID: impi, ServiceProfile: []ServiceProfile{{}}}
	for _, u := range impus {
		sub.ServiceProfile[0].PublicIdentity = append(sub.ServiceProfile[0].PublicIdentity, PublicIdentity{Identity: u})
	}
	b, err := xml.Marshal(sub)
	if err != nil { // strings only: cannot fail
		panic(err)
	}
	return append([]byte(xml.Header), b...)
}

// ParseUserData parses User-Data XML and returns the private identity and
// every public identity, in document order.
func ParseUserData(b []byte) (impi string, impus []string, err error) {
	var sub IMSSubscription
	if err := xml.Unmarshal(b, &sub); err != nil {
		return "", nil, errBadUserData
	}
	for _, sp := range sub.ServiceProfile {
		for _, pi := range sp.PublicIdentity {
			impus = append(impus, pi.Identity)
		}
	}
	return sub.PrivateID, impus, nil
}
