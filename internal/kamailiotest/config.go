//go:build linux

package kamailiotest

import (
	"fmt"
	"io"
	"net/netip"
	"text/template"
)

// cfgData fills cfgTemplate and cdpTemplate.
type cfgData struct {
	Debug     int
	Addr      netip.Addr
	SIPPort   uint16
	DiamPort  uint16
	Host      string // S-CSCF host name, also cdp's Origin-Host
	Realm     string
	ModuleDir string
	CDPFile   string
	HSS       netip.AddrPort
}

// URI is the S-CSCF's own SIP URI: the Server-Name it puts in MAR and SAR.
func (d cfgData) URI() string { return fmt.Sprintf("sip:%s:%d", d.Host, d.SIPPort) }

// cfgTemplate is a minimal S-CSCF: the REGISTER route of kamailio's
// misc/examples/ims/scscf/kamailio.cfg without ISC, charging, databases or
// the RPC/XMLRPC control sockets, and a plain route for calls between the
// UEs it registered.
var cfgTemplate = template.Must(template.New("kamailio.cfg").Parse(`#!KAMAILIO
# Written by imsec's kamailiotest harness: a minimal S-CSCF.

debug={{.Debug}}
log_stderror=yes
# One UDP worker is enough for a test and keeps the process count low.
children=1
disable_tcp=yes
# Only the loopback address of its own; no DNS lookups of our own names.
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{{.Addr}}:{{.SIPPort}}
alias={{.Host}}
alias={{.Realm}}

mpath="{{.ModuleDir}}/"

# tm: ims_auth and ims_registrar_scscf suspend the transaction while the
# Diameter answer is outstanding (t_suspend / t_continue).
loadmodule "tm.so"
# sl: stateless replies (405 for anything but REGISTER, OPTIONS probe).
loadmodule "sl.so"
# pv, xlog: $avp(...) in the reply routes and the log lines the harness waits on.
loadmodule "pv.so"
loadmodule "xlog.so"
# rr: ims_dialog needs its API ("can't load RR API"); calls record the
# S-CSCF and follow Route (loose_route, record_route).
loadmodule "rr.so"
# siputils: has_totag() for in-dialog requests.
loadmodule "siputils.so"
# ims_dialog: ims_usrloc_scscf refuses to start without its API
# ("can't load Dialog API"); it needs a dlg_flag, no database.
loadmodule "ims_dialog.so"
# presence: ims_usrloc_scscf will not start without it either; no database.
loadmodule "presence.so"
# cdp, cdp_avp: the Diameter peer towards the HSS (Cx).
loadmodule "cdp.so"
loadmodule "cdp_avp.so"
# The S-CSCF proper: contacts in memory, REGISTER handling (SAR), AKA (MAR).
loadmodule "ims_usrloc_scscf.so"
loadmodule "ims_registrar_scscf.so"
loadmodule "ims_auth.so"

modparam("ims_dialog", "dlg_flag", 2)
modparam("ims_dialog", "db_mode", 0)

modparam("cdp", "config_file", "{{.CDPFile}}")

# No db_url: contacts live in shared memory only.
modparam("ims_usrloc_scscf", "matching_mode", 0)

# Server-Name in MAR, and the realm the MAR is routed by (Destination-Realm
# only; cdp's DefaultRoute picks the HSS peer).
modparam("ims_auth", "name", "{{.URI}}")
modparam("ims_auth", "registration_default_algorithm", "AKAv1-MD5")
modparam("ims_auth", "cxdx_dest_realm", "{{.Realm}}")

# Server-Name in SAR and its Destination-Realm.
modparam("ims_registrar_scscf", "scscf_name", "{{.URI}}")
modparam("ims_registrar_scscf", "cxdx_dest_realm", "{{.Realm}}")
# Without max_expires the module grants every contact 0 s ("Calculated
# expires for contact is 0") and the 200 carries no Contact.
modparam("ims_registrar_scscf", "default_expires", 3600)
modparam("ims_registrar_scscf", "min_expires", 60)
modparam("ims_registrar_scscf", "max_expires", 3600)
# Store the P-CSCF's Path with each contact (RFC 3327): lookup() then sends
# terminating requests to the P-CSCF the UE registered through. Without it
# the contact (the UE's address inside its tunnel) is tried directly.
# path_mode 1 (lazy): the 200 repeats Path when the REGISTER supports it.
modparam("ims_registrar_scscf", "use_path", 1)
modparam("ims_registrar_scscf", "path_mode", 1)

request_route {
	if ($rm == "OPTIONS" && !has_totag()) {
		# The harness's readiness probe.
		sl_send_reply("200", "OK");
		exit;
	}
	if ($rm == "REGISTER") {
		route(REGISTER);
		exit;
	}
	route(CALLS);
}

# Calls between registered UEs: a P-CSCF sends its UE's requests along the
# Service-Route; the S-CSCF records itself and sends them to the callee's
# contact along the Path it registered (no ISC, no originating/terminating
# split: one S-CSCF serves both ends).
route[CALLS] {
	if ($rm == "CANCEL") {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (has_totag()) {
		if (loose_route()) {
			t_relay();
			exit;
		}
		if ($rm == "ACK") {
			if (t_check_trans()) {
				t_relay();
			}
			exit;
		}
		sl_send_reply("404", "Not Here");
		exit;
	}
	# Our own Service-Route entry.
	loose_route();
	record_route();
	if (!lookup("location")) {
		xlog("L_NOTICE", "kamailiotest: $rm to $ru: not registered\n");
		send_reply("404", "Not Found");
		exit;
	}
	xlog("L_NOTICE", "kamailiotest: $rm to $ru via $du\n");
	t_relay();
}

# As in the shipped example's route[REGISTER], without ISC filters.
route[REGISTER] {
	if (!ims_www_authenticate("$td")) {
		if ($? == -2) {
			send_reply("403", "Authentication Failed");
			exit;
		}
		if ($? == -3) {
			send_reply("400", "Bad Request");
			exit;
		}
		if ($? == -9) {
			# auts= with a non-empty response: MAR with SIP-Authorization
			# = RAND||AUTS, then a fresh challenge.
			xlog("L_NOTICE", "kamailiotest: resync requested by $fu\n");
			ims_www_resync_auth("REG_RESYNC_REPLY", "$td");
			exit;
		}
		ims_www_challenge("REG_MAR_REPLY", "$td", "AKAv1-MD5");
		exit;
	}
	xlog("L_NOTICE", "kamailiotest: authenticated REGISTER from $fu\n");
	# The four-argument form: the shipped example's save(route, "location")
	# crashes on the first authenticated REGISTER in 5.6.
	save("REG_SAR_REPLY", "location", "0", "0");
	exit;
}

route[REG_MAR_REPLY] {
	xlog("L_NOTICE", "kamailiotest: MAA return code $avp(s:maa_return_code)\n");
	if ($avp(s:maa_return_code) != 1) {
		send_reply("500", "MAR failed");
	}
	exit;
}

route[REG_RESYNC_REPLY] {
	xlog("L_NOTICE", "kamailiotest: resync MAA received\n");
	ims_www_challenge("REG_MAR_REPLY", "$td", "AKAv1-MD5");
}

route[REG_SAR_REPLY] {
	# On success ims_registrar_scscf has sent the 200 itself.
	xlog("L_NOTICE", "kamailiotest: SAA return code $avp(s:saa_return_code)\n");
	exit;
}
`))

// cdpTemplate is cdp's diametercfg.xml (the format of
// misc/examples/ims/scscf/scscf.xml.sample): our identity, the HSS as the
// only peer and the default route, Cx (16777216, 3GPP) as the only
// application.
var cdpTemplate = template.Must(template.New("cdp.xml").Parse(`<?xml version="1.0" encoding="UTF-8"?>
<!-- Tc: seconds between reconnect attempts; TransactionTimeout bounds a MAR/SAR. -->
<DiameterPeer FQDN="{{.Host}}" Realm="{{.Realm}}" Vendor_Id="10415" Product_Name="CDiameterPeer"
	AcceptUnknownPeers="0" DropUnknownOnDisconnect="1" Tc="2" Workers="2" QueueLength="32"
	TransactionTimeout="5" SessionsHashSize="128" DefaultAuthSessionTimeout="3600" MaxAuthSessionTimeout="3600">
	<!-- cdp connects to its peer by getaddrinfo of FQDN: a literal address needs no DNS. -->
	<Peer FQDN="{{.HSS.Addr}}" Realm="{{.Realm}}" port="{{.HSS.Port}}"/>
	<Acceptor port="{{.DiamPort}}" bind="{{.Addr}}"/>
	<Auth id="16777216" vendor="10415"/>
	<SupportedVendor vendor="10415"/>
	<DefaultRoute FQDN="{{.HSS.Addr}}" metric="10"/>
</DiameterPeer>
`))

func writeConfigs(cfg, cdp io.Writer, d cfgData) error {
	if err := cfgTemplate.Execute(cfg, d); err != nil {
		return err
	}
	return cdpTemplate.Execute(cdp, d)
}
