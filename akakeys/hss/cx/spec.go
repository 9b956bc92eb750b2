package cx

// Spec constants of the Cx/Dx application, under their spec names.

// Application and vendor (TS 29.229 §5.6, §6.1).
const (
	// AppID is the Cx/Dx Auth-Application-Id (TS 29.229 §5.6).
	AppID uint32 = 16777216
	// Vendor3GPP is the 3GPP vendor id (IANA SMI enterprise 10415).
	Vendor3GPP uint32 = 10415
)

// Command codes (TS 29.229 §6.1, Table 6.1.1).
const (
	CmdUserAuthorization uint32 = 300 // UAR/UAA
	CmdServerAssignment  uint32 = 301 // SAR/SAA
	CmdLocationInfo      uint32 = 302 // LIR/LIA
	CmdMultimediaAuth    uint32 = 303 // MAR/MAA
	cmdCapabilitiesExch  uint32 = 257 // CER/CEA (RFC 6733 §5.3)
	cmdDeviceWatchdog    uint32 = 280 // DWR/DWA (RFC 6733 §5.5)
	cmdDisconnectPeer    uint32 = 282 // DPR/DPA (RFC 6733 §5.4)
)

// Base AVP codes (RFC 6733 §4.5), no vendor.
const (
	avpUserName                    uint32 = 1
	avpAuthApplicationID           uint32 = 258
	avpVendorSpecificApplicationID uint32 = 260
	avpSessionID                   uint32 = 263
	avpOriginHost                  uint32 = 264
	avpVendorID                    uint32 = 266
	avpResultCode                  uint32 = 268
	avpDisconnectCause             uint32 = 273
	avpAuthSessionState            uint32 = 277
	avpFailedAVP                   uint32 = 279
	avpDestinationRealm            uint32 = 283
	avpDestinationHost             uint32 = 293
	avpOriginRealm                 uint32 = 296
	avpExperimentalResult          uint32 = 297
	avpExperimentalResultCode      uint32 = 298
)

// Cx AVP codes, vendor 10415 (TS 29.229 §6.3, Table 6.3.1). All carry the
// M and V bits except Supported-Features and its members (V only).
const (
	avpVisitedNetworkIdentifier uint32 = 600 // OctetString
	avpPublicIdentity           uint32 = 601 // UTF8String
	avpServerName               uint32 = 602 // UTF8String
	avpServerCapabilities       uint32 = 603 // Grouped
	avpMandatoryCapability      uint32 = 604 // Unsigned32
	avpOptionalCapability       uint32 = 605 // Unsigned32
	avpUserData                 uint32 = 606 // OctetString
	avpSIPNumberAuthItems       uint32 = 607 // Unsigned32
	avpSIPAuthenticationScheme  uint32 = 608 // UTF8String
	avpSIPAuthenticate          uint32 = 609 // OctetString
	avpSIPAuthorization         uint32 = 610 // OctetString
	avpSIPAuthenticationContext uint32 = 611 // OctetString
	avpSIPAuthDataItem          uint32 = 612 // Grouped
	avpSIPItemNumber            uint32 = 613 // Unsigned32
	avpServerAssignmentType     uint32 = 614 // Enumerated
	avpUserAuthorizationType    uint32 = 623 // Enumerated
	avpUserDataAlreadyAvailable uint32 = 624 // Enumerated
	avpConfidentialityKey       uint32 = 625 // OctetString
	avpIntegrityKey             uint32 = 626 // OctetString
	avpSupportedFeatures        uint32 = 628 // Grouped, V
	avpFeatureListID            uint32 = 629 // Unsigned32, V
	avpFeatureList              uint32 = 630 // Unsigned32, V
	avpOriginatingRequest       uint32 = 633 // Enumerated
)

// Base result codes (RFC 6733 §7.1), carried in Result-Code.
const (
	DiameterSuccess                uint32 = 2001
	DiameterCommandUnsupported     uint32 = 3001
	DiameterApplicationUnsupported uint32 = 3007
	DiameterInvalidHdrBits         uint32 = 3008
	DiameterAuthenticationRejected uint32 = 4001
	DiameterInvalidAVPValue        uint32 = 5004
	DiameterMissingAVP             uint32 = 5005
	DiameterUnableToComply         uint32 = 5012
	DiameterInvalidAVPLength       uint32 = 5014
)

// Cx result codes (TS 29.229 §6.2), carried in Experimental-Result with
// Vendor-Id 10415.
const (
	DiameterFirstRegistration              uint32 = 2001 // §6.2.1.1
	DiameterSubsequentRegistration         uint32 = 2002 // §6.2.1.2
	DiameterUnregisteredService            uint32 = 2003 // §6.2.1.3
	DiameterErrorUserUnknown               uint32 = 5001 // §6.2.2.1
	DiameterErrorIdentitiesDontMatch       uint32 = 5002 // §6.2.2.2
	DiameterErrorIdentityNotRegistered     uint32 = 5003 // §6.2.2.3
	DiameterErrorRoamingNotAllowed         uint32 = 5004 // §6.2.2.4
	DiameterErrorIdentityAlreadyRegistered uint32 = 5005 // §6.2.2.5
	DiameterErrorAuthSchemeNotSupported    uint32 = 5006 // §6.2.2.6
	DiameterErrorInAssignmentType          uint32 = 5007 // §6.2.2.7
	DiameterErrorTooMuchData               uint32 = 5008 // §6.2.2.8
)

// Server-Assignment-Type values (TS 29.229 §6.3.15).
const (
	NoAssignment                         uint32 = 0
	Registration                         uint32 = 1
	ReRegistration                       uint32 = 2
	UnregisteredUser                     uint32 = 3
	TimeoutDeregistration                uint32 = 4
	UserDeregistration                   uint32 = 5
	TimeoutDeregistrationStoreServerName uint32 = 6
	UserDeregistrationStoreServerName    uint32 = 7
	AdministrativeDeregistration         uint32 = 8
	AuthenticationFailure                uint32 = 9
	AuthenticationTimeout                uint32 = 10
	DeregistrationTooMuchData            uint32 = 11
)

// User-Authorization-Type values (TS 29.229 §6.3.24).
const (
	UATRegistration                uint32 = 0
	UATDeRegistration              uint32 = 1
	UATRegistrationAndCapabilities uint32 = 2
)

// Auth-Session-State NO_STATE_MAINTAINED (RFC 6733 §8.11): Cx is stateless
// (TS 29.229 §6.1).
const noStateMaintained uint32 = 1

// SIP-Authentication-Scheme names (TS 29.229 §6.3.9, TS 33.203).
const (
	SchemeAKAv1MD5 = "Digest-AKAv1-MD5"
	// schemeUnknown is what Kamailio's ims_auth sends when its auth
	// scheme is not configured; answered as Digest-AKAv1-MD5.
	schemeUnknown = "unknown"
)
