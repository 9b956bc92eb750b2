package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/observe"
	"github.com/imsec/imsec/sip"
	"github.com/imsec/imsec/sip/media"

	sipgosip "github.com/emiago/sipgo/sip"
)

func init() {
	register(command{
		name:  "ue",
		short: "run a UE: register with SIP-AKA and sec-agree, then signal inside an ESP-in-UDP tunnel",
		run:   runUE,
	})
}

const ueSynopsis = `ue [call SIP-URI] --pcscf ADDR:PORT --impi ID --impu URI --k HEX (--op HEX | --opc HEX) [flags]

The client side of IMS access security with NAT traversal: registers with
the P-CSCF (unprotected REGISTER, AKAv1-MD5 challenge checked by the USIM
logic, sec-agree with mod=UDP-enc-tun), installs its ESP-in-UDP SAs in a
userspace netstack (no privilege), sends the NAT pinhole traffic, learns its
inner address over the tunnel, and registers again inside it. Then it stays
registered: NAT keepalives, re-registration (new AKA run, new SAs) before
expiry, a fresh start if the P-CSCF forgets it, and de-registration on
Ctrl-C or SIGTERM. One line per step is printed; -v adds SIP traces.

--once registers, pings the P-CSCF's inner address through the tunnel,
de-registers and exits 0 (non-zero with the reason otherwise), for scripts.

'imsec ue call SIP-URI ...' registers, calls SIP-URI, sends synthetic audio
(20 ms packets) and video (frames of up to 1200-byte packets) through the
separate media tunnel for --duration, hangs up, prints the media report
(loss, jitter, one-way delay per stream), de-registers and exits 0. A UE
left running ('imsec ue' without 'call') answers calls (--answer) and
prints the report of each when the caller hangs up.

Example (the subscriber made with 'imsec sub add' on the P-CSCF):
  imsec ue --pcscf 127.0.0.1:5060 --impi alice@a.example --impu sip:alice@a.example \
    --k 465b5ce8b199b49faa5f0a2ee238a6bc --op cdc202d5123e20f62b6d676ac72cb318 --once`

func runUE(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ue", ueSynopsis, stderr)
	config := fs.String("config", "", "JSON file of settings (keys are these flag names)")
	pcscf := fs.String("pcscf", "", "the P-CSCF's unprotected SIP address, ADDR:PORT (required)")
	pcscfESP := fs.String("pcscf-esp", "", "where ESP goes (default: the --pcscf address, port 4500)")
	local := fs.String("local", "", "local address for SIP and ESP (default: chosen by the host's routing)")
	impi := fs.String("impi", "", "private identity, e.g. alice@a.example (required)")
	impu := fs.String("impu", "", "public identity, e.g. sip:alice@a.example (required)")
	sub := addSubscriberFlags(fs)
	amf := fs.String("amf", "", "if set, the AMF that AUTN must carry (2 bytes hex)")
	expires := fs.String("expires", "600", "registration lifetime to ask for, in seconds")
	keepalive := fs.Duration("keepalive", sip.DefaultKeepalive, "NAT keepalive interval (RFC 3948); 0 turns them off")
	probe := fs.Duration("probe", sip.DefaultProbe, "how often to check, through the tunnel, that the P-CSCF still holds our SAs (a restarted P-CSCF is noticed within this and 5 s); 0 turns it off")
	modes := fs.String("modes", strings.Join(sip.DefaultModes, ","), modesUsageUE)
	portS := fs.Uint("port-s", sip.DefaultUEPortS, "protected server port (port-c is port-s-6 and -5)")
	batchPad := fs.Int("batch-pad", 0, batchPadUsage)
	innerFam := fs.String("inner", sip.InnerIPv4.String(), "inner addresses to ask the P-CSCF for over the tunnel: ipv4 (DHCP), ipv6 (DHCPv6) or dual (both; SIP and media then use IPv6)")
	tunName := fs.String("tun", "", "use this kernel TUN device instead of the netstack (needs CAP_NET_ADMIN)")
	keylog := fs.String("keylog", "", "write every SA to this file in Wireshark's esp_sa format (secrets!)")
	once := fs.Bool("once", false, "register, ping the P-CSCF through the tunnel, de-register, exit")
	verbose := fs.Bool("v", false, "log SIP traces to stderr")
	pcscfMedia := fs.String("pcscf-media", "", "where the media tunnel's ESP goes (default: the --pcscf-esp address with the port the P-CSCF announces)")
	answer := fs.String("answer", sip.AnswerAuto.String(), "incoming calls: auto (ring, answer), busy (486) or ignore (ring until the caller gives up)")
	duration := fs.Duration("duration", 5*time.Second, "with 'call': how long to send media")
	audioSize := fs.Int("audio-size", 160, "audio payload octets per 20 ms packet")
	audioInterval := fs.Duration("audio-interval", 20*time.Millisecond, "audio packet interval")
	videoFPS := fs.Int("video-fps", 25, "video frames per second (0: no video)")
	videoKey := fs.Int("video-key", 8000, "video key frame size in octets (one a second)")
	videoDelta := fs.Int("video-delta", 1500, "video delta frame size in octets")
	asJSON := fs.Bool("json", false, "with 'call': print the call report as JSON")
	obs := addObsFlags(fs)
	var target string
	if len(args) > 0 && args[0] == "call" {
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			return usageErrorf("call needs a SIP URI: imsec ue call sip:bob@b.example --pcscf ...")
		}
		target = args[1]
		args = args[2:]
	}
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := loadConfig(fs, *config); err != nil {
		return err
	}
	if err := obs.check(*verbose); err != nil {
		return err
	}
	cfg := sip.UEConfig{IMPI: *impi, IMPU: *impu}
	var err error
	if *pcscf == "" {
		return usageErrorf("--pcscf is required")
	}
	if cfg.PCSCF, err = addrPortArg("pcscf", *pcscf); err != nil {
		return err
	}
	if *pcscfESP != "" {
		if cfg.PCSCFESP, err = addrPortArg("pcscf-esp", *pcscfESP); err != nil {
			return err
		}
	}
	if *local != "" {
		if cfg.Local, err = netip.ParseAddr(*local); err != nil {
			return usageErrorf("--local %q: not an IP address", *local)
		}
	}
	if cfg.Inner, err = sip.ParseInnerFamily(*innerFam); err != nil {
		return usageErrorf("--inner: %v", err)
	}
	if cfg.K, cfg.OPc, err = sub.milenage(); err != nil {
		return err
	}
	if *amf != "" {
		b, err := hexArg("amf", *amf, 2)
		if err != nil {
			return err
		}
		a := akakeys.AMF(b)
		cfg.AMF = &a
	}
	secs, err := strconv.Atoi(*expires)
	if err != nil || secs < 1 {
		return usageErrorf("--expires %q: want a positive number of seconds", *expires)
	}
	cfg.Expires = time.Duration(secs) * time.Second
	switch {
	case *keepalive < 0:
		return usageErrorf("--keepalive must not be negative")
	case *keepalive == 0:
		cfg.Keepalive = sip.KeepaliveOff
	default:
		cfg.Keepalive = *keepalive
	}
	switch {
	case *probe < 0:
		return usageErrorf("--probe must not be negative")
	case *probe == 0:
		cfg.Probe = sip.ProbeOff
	default:
		cfg.Probe = *probe
	}
	if *portS > 65535 {
		return usageErrorf("--port-s %d: want 1024..65535", *portS)
	}
	cfg.PortS = uint16(*portS)
	if cfg.Modes, err = modesArg(*modes); err != nil {
		return err
	}
	if err := checkBatchPad(*batchPad); err != nil {
		return err
	}
	cfg.BatchPad = *batchPad
	cfg.TUN = *tunName
	if *pcscfMedia != "" {
		if cfg.PCSCFMediaESP, err = addrPortArg("pcscf-media", *pcscfMedia); err != nil {
			return err
		}
	}
	if cfg.Answer, err = sip.ParseAnswerMode(*answer); err != nil {
		return usageErrorf("--answer %q: want auto, busy or ignore", *answer)
	}
	if *duration <= 0 || *audioSize < 20 || *audioInterval <= 0 || *videoFPS < 0 || *videoKey < 40 || *videoDelta < 40 {
		return usageErrorf("--duration, --audio-interval must be positive; --audio-size at least 20; --video-key and --video-delta at least 40; --video-fps not negative")
	}
	mc := sip.MediaConfig{NoVideo: *videoFPS == 0,
		Audio: media.Audio{PayloadSize: *audioSize, Interval: *audioInterval},
		Video: media.Video{FPS: *videoFPS, KeyFrameSize: *videoKey, DeltaFrameSize: *videoDelta}}
	cfg.Media = mc
	cfg.OnCallEnd = func(r sip.CallReport) { fmt.Fprint(stdout, r) }
	if target != "" {
		var uri sipgosip.Uri
		if err := sipgosip.ParseUri(target, &uri); err != nil || uri.Host == "" || !strings.HasPrefix(target, "sip") {
			return usageErrorf("call target %q: want a SIP URI such as sip:bob@b.example", target)
		}
	}
	kl, closeKL, err := openKeyLog(*keylog, false)
	if err != nil {
		return err
	}
	defer closeKL()
	cfg.KeyLog = kl
	log := obs.logger(stderr)
	setSIPGoLogger(log, *verbose)
	cfg.Logger = log
	var ev *observe.Events
	if obs.on() {
		ev = observe.NewEvents()
	}
	cfg.Events = obs.events(stdout, log, ev)
	u, err := sip.NewUE(cfg)
	if errors.Is(err, sip.ErrConfig) {
		return usageErrorf("%v", err)
	}
	if err != nil {
		return err
	}
	defer u.Close()
	if obs.on() {
		reg, err := newRegistry(ev)
		if err == nil {
			err = observe.UE(reg, u)
		}
		if err != nil {
			return err
		}
		stop, err := obs.serve(ctx, stdout, log, reg, func() any { return observe.UEStatus(u, *impi, *impu) })
		if err != nil {
			return err
		}
		defer stop()
	}
	switch {
	case target != "":
		rep, err := u.CallOnce(ctx, target, *duration)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rep)
		}
		fmt.Fprint(stdout, rep)
		return nil
	case *once:
		r, err := u.Once(ctx)
		if err != nil {
			return err
		}
		var addrs []string
		for _, a := range r.Info.InnerAddrs {
			addrs = append(addrs, a.String())
		}
		fmt.Fprintf(stdout, "registered as %s with inner address %s (%s); ping %v through the tunnel: %v\n",
			*impu, strings.Join(addrs, ", "), r.Info.Suite, r.Info.PCSCFInner, r.RTT.Round(time.Microsecond))
		return nil
	}
	return u.Run(ctx)
}
