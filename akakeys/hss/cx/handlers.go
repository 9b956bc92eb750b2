package cx

import (
	"context"
	"errors"
	"sync"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/datatype"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

// assignment is the registration state of one IMPU (TS 29.228 §6.1.2): the
// S-CSCF serving it and whether it is registered. It lives in memory only:
// after a restart of the HSS every IMPU is unregistered with no S-CSCF,
// and the S-CSCF's next SAR (re-registration) assigns it again.
type assignment struct {
	server     string
	registered bool
}

type registrations struct {
	mu sync.Mutex
	m  map[string]assignment // by IMPU
}

func (r *registrations) get(impu string) assignment {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[impu]
}

func (r *registrations) set(impus []string, a assignment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range impus {
		if a == (assignment{}) {
			delete(r.m, u)
		} else {
			r.m[u] = a
		}
	}
}

// cxError is a failed Cx request: a base Result-Code or an
// Experimental-Result, and the AVP to name in Failed-AVP.
type cxError struct {
	code   uint32
	exp    bool
	failed *diam.AVP
}

// serveCx answers one decoded Cx request.
func (s *Server) serveCx(ctx context.Context, m *diam.Message) *diam.Message {
	var extra []*diam.AVP
	var e *cxError
	switch m.Header.CommandCode {
	case CmdMultimediaAuth:
		s.c.mar.Add(1)
		extra, e = s.mar(ctx, m.AVP)
	case CmdUserAuthorization:
		s.c.uar.Add(1)
		extra, e = s.uar(ctx, m.AVP)
	case CmdServerAssignment:
		s.c.sar.Add(1)
		extra, e = s.sar(ctx, m.AVP)
	case CmdLocationInfo:
		s.c.lir.Add(1)
		extra, e = s.lir(ctx, m.AVP)
	}
	a := m.Answer(0)
	if sid := find(m.AVP, avpSessionID, 0); sid != nil {
		a.AddAVP(sid)
	}
	a.AddAVP(vendorSpecificApp())
	switch {
	case e == nil:
		a.AddAVP(base(avpResultCode, datatype.Unsigned32(DiameterSuccess)))
	case e.exp:
		a.AddAVP(experimental(e.code))
	default:
		a.AddAVP(base(avpResultCode, datatype.Unsigned32(e.code)))
	}
	a.AddAVP(base(avpAuthSessionState, datatype.Enumerated(noStateMaintained)))
	s.origin(a)
	if e != nil {
		s.countError(e)
		if e.failed != nil {
			a.AddAVP(base(avpFailedAVP, &diam.GroupedAVP{AVP: []*diam.AVP{e.failed}}))
		}
	}
	for _, x := range extra {
		a.AddAVP(x)
	}
	return a
}

func (s *Server) countError(e *cxError) {
	switch {
	case e.exp && e.code == DiameterErrorUserUnknown:
		s.c.userUnknown.Add(1)
	case e.exp && e.code == DiameterErrorIdentitiesDontMatch:
		s.c.mismatch.Add(1)
	case !e.exp && e.code == DiameterMissingAVP:
		s.c.missing.Add(1)
	case !e.exp && e.code == DiameterInvalidAVPValue:
		s.c.invalid.Add(1)
	case !e.exp && e.code == DiameterAuthenticationRejected:
		s.c.authRejected.Add(1)
	case !e.exp && e.code == DiameterUnableToComply:
		s.c.failed.Add(1)
	}
}

func missing(code, vendor uint32) *cxError {
	var zero datatype.Type = datatype.OctetString("")
	a := diam.NewAVP(code, 0x40, vendor, zero)
	if vendor != 0 {
		a.Flags |= 0x80
	}
	return &cxError{code: DiameterMissingAVP, failed: a}
}

func invalid(a *diam.AVP) *cxError { return &cxError{code: DiameterInvalidAVPValue, failed: a} }

var (
	errUserUnknown = &cxError{code: DiameterErrorUserUnknown, exp: true}
	errMismatch    = &cxError{code: DiameterErrorIdentitiesDontMatch, exp: true}
	errNotReg      = &cxError{code: DiameterErrorIdentityNotRegistered, exp: true}
	errScheme      = &cxError{code: DiameterErrorAuthSchemeNotSupported, exp: true}
	errComply      = &cxError{code: DiameterUnableToComply}
	errRejected    = &cxError{code: DiameterAuthenticationRejected}
)

// backendError maps an HSS error to its Cx result.
func backendError(err error) *cxError {
	switch {
	case errors.Is(err, hss.ErrUnknownSubscriber), errors.Is(err, hss.ErrUnknownIMPU):
		return errUserUnknown
	case errors.Is(err, akakeys.ErrAUTSMAC):
		return errRejected
	}
	return errComply
}

// identities reads User-Name (if want) and Public-Identity and checks that
// both are known and belong together (TS 29.228 §6.3: 5001, 5002).
func (s *Server) identities(ctx context.Context, avps []*diam.AVP, needIMPI, needIMPU bool) (impi, impu string, e *cxError) {
	un := find(avps, avpUserName, 0)
	impi, hasIMPI, bad := str(un)
	if bad {
		return "", "", invalid(un)
	}
	pi := find(avps, avpPublicIdentity, Vendor3GPP)
	impu, hasIMPU, bad := str(pi)
	if bad {
		return "", "", invalid(pi)
	}
	if needIMPI && !hasIMPI {
		return "", "", missing(avpUserName, 0)
	}
	if needIMPU && !hasIMPU {
		return "", "", missing(avpPublicIdentity, Vendor3GPP)
	}
	if hasIMPI {
		if _, err := s.cfg.HSS.IMPUs(ctx, impi); err != nil {
			return "", "", backendError(err)
		}
	}
	if hasIMPU {
		owner, err := s.cfg.HSS.LookupIMPU(ctx, impu)
		if err != nil {
			return "", "", backendError(err)
		}
		if hasIMPI && owner != impi {
			return "", "", errMismatch
		}
		impi = owner
	}
	return impi, impu, nil
}

// mar answers a Multimedia-Auth-Request (TS 29.228 §6.3, TS 29.229
// §6.1.7/§6.1.8): SIP-Number-Auth-Items vectors (at most MaxAuthItems), or
// a resynchronisation first when the SIP-Auth-Data-Item carries
// SIP-Authorization = RAND || AUTS (TS 29.228 Table 6.3.3).
func (s *Server) mar(ctx context.Context, avps []*diam.AVP) ([]*diam.AVP, *cxError) {
	impi, impu, e := s.identities(ctx, avps, true, true)
	if e != nil {
		return nil, e
	}
	n := uint32(1)
	if na := find(avps, avpSIPNumberAuthItems, Vendor3GPP); na != nil {
		v, _, bad := u32(na)
		if bad {
			return nil, invalid(na)
		}
		n = max(1, min(v, MaxAuthItems))
	}
	var resync []byte
	itemAVP := find(avps, avpSIPAuthDataItem, Vendor3GPP)
	item := group(itemAVP)
	if itemAVP == nil {
		return nil, missing(avpSIPAuthDataItem, Vendor3GPP)
	}
	if sc := find(item, avpSIPAuthenticationScheme, Vendor3GPP); sc != nil {
		scheme, _, bad := str(sc)
		if bad {
			return nil, invalid(sc)
		}
		if scheme != SchemeAKAv1MD5 && scheme != schemeUnknown && scheme != "" {
			return nil, errScheme
		}
	}
	if az := find(item, avpSIPAuthorization, Vendor3GPP); az != nil {
		b, _, bad := octets(az)
		if bad || (len(b) != 0 && len(b) != len(akakeys.RAND{})+len(akakeys.AUTS{})) {
			return nil, invalid(az)
		}
		resync = b
	}
	out := []*diam.AVP{
		base(avpUserName, datatype.UTF8String(impi)),
		tgpp(avpPublicIdentity, datatype.UTF8String(impu)),
	}
	items := make([]*diam.AVP, 0, n)
	for i := range n {
		var v akakeys.Vector
		var err error
		if i == 0 && len(resync) != 0 {
			var rand akakeys.RAND
			var auts akakeys.AUTS
			copy(rand[:], resync)
			copy(auts[:], resync[len(rand):])
			v, err = s.cfg.HSS.Resync(ctx, impi, rand, auts)
		} else {
			v, err = s.cfg.HSS.Vector(ctx, impi)
		}
		if err != nil {
			if i == 0 {
				return nil, backendError(err)
			}
			break // the vectors so far are good
		}
		items = append(items, authItem(int(i)+1, v))
	}
	out = append(out, tgpp(avpSIPNumberAuthItems, datatype.Unsigned32(len(items))))
	return append(out, items...), nil
}

// authItem is one SIP-Auth-Data-Item of an MAA (TS 29.229 §6.3.13 and
// TS 29.228 Table 6.3.4): SIP-Authenticate = RAND || AUTN,
// SIP-Authorization = XRES, Confidentiality-Key = CK, Integrity-Key = IK.
func authItem(n int, v akakeys.Vector) *diam.AVP {
	return tgpp(avpSIPAuthDataItem, &diam.GroupedAVP{AVP: []*diam.AVP{
		tgpp(avpSIPItemNumber, datatype.Unsigned32(n)),
		tgpp(avpSIPAuthenticationScheme, datatype.UTF8String(SchemeAKAv1MD5)),
		tgpp(avpSIPAuthenticate, datatype.OctetString(append(v.RAND[:], v.AUTN[:]...))),
		tgpp(avpSIPAuthorization, datatype.OctetString(v.XRES[:])),
		tgpp(avpConfidentialityKey, datatype.OctetString(v.CK[:])),
		tgpp(avpIntegrityKey, datatype.OctetString(v.IK[:])),
	}})
}

// uar answers a User-Authorization-Request (TS 29.228 §6.1.1).
func (s *Server) uar(ctx context.Context, avps []*diam.AVP) ([]*diam.AVP, *cxError) {
	_, impu, e := s.identities(ctx, avps, true, true)
	if e != nil {
		return nil, e
	}
	typ := UATRegistration
	if t := find(avps, avpUserAuthorizationType, Vendor3GPP); t != nil {
		v, _, bad := u32(t)
		if bad || v > UATRegistrationAndCapabilities {
			return nil, invalid(t)
		}
		typ = v
	}
	a := s.reg.get(impu)
	if typ == UATDeRegistration {
		if a.server == "" {
			return nil, errNotReg
		}
		return []*diam.AVP{tgpp(avpServerName, datatype.UTF8String(a.server))}, nil
	}
	if a.server != "" && typ != UATRegistrationAndCapabilities {
		return []*diam.AVP{tgpp(avpServerName, datatype.UTF8String(a.server))},
			&cxError{code: DiameterSubsequentRegistration, exp: true}
	}
	if s.cfg.ServerName != "" && typ != UATRegistrationAndCapabilities {
		return []*diam.AVP{tgpp(avpServerName, datatype.UTF8String(s.cfg.ServerName))},
			&cxError{code: DiameterFirstRegistration, exp: true}
	}
	return []*diam.AVP{tgpp(avpServerCapabilities, &diam.GroupedAVP{})},
		&cxError{code: DiameterFirstRegistration, exp: true}
}

// lir answers a Location-Info-Request (TS 29.228 §6.1.4): the S-CSCF of a
// registered IMPU.
func (s *Server) lir(ctx context.Context, avps []*diam.AVP) ([]*diam.AVP, *cxError) {
	_, impu, e := s.identities(ctx, avps, false, true)
	if e != nil {
		return nil, e
	}
	a := s.reg.get(impu)
	if a.server == "" {
		return nil, errNotReg
	}
	if !a.registered {
		return []*diam.AVP{tgpp(avpServerName, datatype.UTF8String(a.server))},
			&cxError{code: DiameterUnregisteredService, exp: true}
	}
	return []*diam.AVP{tgpp(avpServerName, datatype.UTF8String(a.server))}, nil
}

// sar answers a Server-Assignment-Request (TS 29.228 §6.1.2): it records
// or clears the S-CSCF of every IMPU of the subscriber (imsec keeps one
// implicit registration set per subscriber) and returns the User-Data.
func (s *Server) sar(ctx context.Context, avps []*diam.AVP) ([]*diam.AVP, *cxError) {
	impi, _, e := s.identities(ctx, avps, false, false)
	if e != nil {
		return nil, e
	}
	if impi == "" {
		return nil, missing(avpUserName, 0)
	}
	st := find(avps, avpServerAssignmentType, Vendor3GPP)
	typ, ok, bad := u32(st)
	if bad {
		return nil, invalid(st)
	}
	if !ok {
		return nil, missing(avpServerAssignmentType, Vendor3GPP)
	}
	sn := find(avps, avpServerName, Vendor3GPP)
	server, _, bad := str(sn)
	if bad {
		return nil, invalid(sn)
	}
	impus, err := s.cfg.HSS.IMPUs(ctx, impi)
	if err != nil {
		return nil, backendError(err)
	}
	out := []*diam.AVP{base(avpUserName, datatype.UTF8String(impi))}
	withData := false
	switch typ {
	case NoAssignment:
		withData = true
	case Registration, ReRegistration, UnregisteredUser:
		if server == "" {
			return nil, missing(avpServerName, Vendor3GPP)
		}
		s.reg.set(impus, assignment{server: server, registered: typ != UnregisteredUser})
		withData = true
	case TimeoutDeregistration, UserDeregistration, AdministrativeDeregistration, DeregistrationTooMuchData:
		s.reg.set(impus, assignment{})
	case TimeoutDeregistrationStoreServerName, UserDeregistrationStoreServerName:
		s.reg.set(impus, assignment{server: server})
	case AuthenticationFailure, AuthenticationTimeout:
		if len(impus) > 0 && !s.reg.get(impus[0]).registered {
			s.reg.set(impus, assignment{})
		}
	default:
		return nil, invalid(st)
	}
	if withData {
		out = append(out, tgpp(avpUserData, datatype.OctetString(MarshalUserData(impi, impus))))
	}
	return out, nil
}
