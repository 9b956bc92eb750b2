package esp

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "\n", "", "\t", "").Replace(s))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// TestKATAESCBC runs the RFC 3602 §4 cases 1-4 through the very AES-CBC
// cipher objects Seal and Open use (esp/internal/aescbc).
func TestKATAESCBC(t *testing.T) {
	for _, tc := range []struct{ src, key, iv, pt, ct string }{
		{"RFC 3602 §4 Case #1", "06a9214036b8a15b512e03d534120006", "3dafba429d9eb430b422da802c9fac41",
			hex.EncodeToString([]byte("Single block msg")), "e353779c1079aeb82708942dbe77181a"},
		{"RFC 3602 §4 Case #2", "c286696d887c9aa0611bbb3e2025a45a", "562e17996d093d28ddb3ba695a2e6f58",
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
			"d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1"},
		{"RFC 3602 §4 Case #3", "6c3ea0477630ce21a2ce334aa746c2cd", "c782dc4c098c66cbd9cd27d825682c81",
			hex.EncodeToString([]byte("This is a 48-byte message (exactly 3 AES blocks)")),
			"d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5021c19216bad525c8579695d83ba2684"},
		{"RFC 3602 §4 Case #4", "56e47a38c5598974bc46903dba290349", "8ce82eefbea0da3c44699ed7db51b7d9",
			"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
			"c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55"},
	} {
		c := Config{SPI: 0x1000, Mode: Transport, Encryption: EncAESCBC, EncKey: unhex(t, tc.key), Integrity: AuthHMACSHA196, AuthKey: make([]byte, 20)}
		o, err := NewOutbound(c)
		if err != nil {
			t.Fatal(err)
		}
		in, err := NewInbound(c)
		if err != nil {
			t.Fatal(err)
		}
		pt, ct, iv := unhex(t, tc.pt), unhex(t, tc.ct), unhex(t, tc.iv)
		buf := append([]byte(nil), pt...)
		o.a.cbc().EncryptCBC(buf, buf, iv)
		if !bytes.Equal(buf, ct) {
			t.Errorf("%s: encrypt = %x, want %x", tc.src, buf, ct)
		}
		in.a.cbc().DecryptCBC(buf, buf, iv)
		if !bytes.Equal(buf, pt) {
			t.Errorf("%s: decrypt = %x, want %x", tc.src, buf, pt)
		}
	}
}

// TestKATESPAESCBC checks whole ESP packets: RFC 3602 §4 cases 5-8, which
// are AES-CBC ESP packets without ICV (hence allowNoAuth), built with the
// RFC's IV and checked byte for byte, then opened.
func TestKATESPAESCBC(t *testing.T) {
	for _, tc := range []struct {
		src      string
		mode     Mode
		key, iv  string
		spi      SPI
		seq      uint64
		nh       byte
		payload  string
		packet   string
		wantPads int
	}{
		{"RFC 3602 §4 Case #5", Transport, "90d382b410eeba7ad938c46cec1a82bf", "e96e8c08ab465763fd098d45dd3ff893", 0x4321, 1, 1,
			"08000ebda70a00008e9c083db95b070008090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637",
			"0000432100000001e96e8c08ab465763fd098d45dd3ff893f663c25d325c18c6a9453e194e120849a4870b66cc6b9965330013b4898dc856a4699e523a55db080b59ec3a8e4b7e52775b07d1db34ed9c538ab50c551b874aa269add047ad2d5913ac19b7cfbad4a6", 14},
		{"RFC 3602 §4 Case #6", Transport, "90d382b410eeba7ad938c46cec1a82bf", "69d08df7d203329db093fc4924e5bd80", 0x4321, 8, 1,
			"0800b5e8a80a0500a69c083d0b660e00777777777777777777777777",
			"000043210000000869d08df7d203329db093fc4924e5bd80f51995881ec4e0c4488987ce742e8109689bb379d2d750c0d915dca346a89f75", 2},
		{"RFC 3602 §4 Case #7", Tunnel, "0123456789abcdef0123456789abcdef", "f4e765244f6407adf13dc1380f673f37", 0x8765, 2, 4,
			"45000054090400004001f988c0a87b03c0a87bc808009f76a90a0100b49c083d02a2040008090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637",
			"0000876500000002f4e765244f6407adf13dc1380f673f37773b5241a4c449225e4f3ce5ed611b0c237ca96cf74a93013c1b0ea1a0cf70f8e4ecaec78ac53aad7a0f022b859243c647752e94a859352b8a4d4d2decd136e5c177f132ad3fbfb2201ac9904c74ee0a109e0ca1e4dfe9d5a100b842f1c22f0d", 10},
		{"RFC 3602 §4 Case #8", Tunnel, "0123456789abcdef0123456789abcdef", "85d47224b5f3dd5d2101d4ea8dffab22", 0x8765, 5, 4,
			"45000044090c00004001f990c0a87b03c0a87bc80800d63caa0a0200c69c083da3de0300ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
			"000087650000000585d47224b5f3dd5d2101d4ea8dffab2215b92683819596a8047232cc00f7048fe45318e11f8a0f62ede3c3fc61203bb50f980a08c9843fd3a1b06d5c07ff9639b7eb7dfb3512e5de435e7207ed971ef3d2726d9b5ef6affc6d17a0decbb13892", 10},
	} {
		c := Config{SPI: tc.spi, Mode: tc.mode, Encryption: EncAESCBC, EncKey: unhex(t, tc.key), Integrity: AuthNull}
		if _, err := NewOutbound(c); err == nil {
			t.Fatal("public constructor accepted aes-cbc with null integrity")
		}
		o, err := newOutbound(c, true)
		if err != nil {
			t.Fatal(err)
		}
		in, err := newInbound(c, true)
		if err != nil {
			t.Fatal(err)
		}
		payload, want := unhex(t, tc.payload), unhex(t, tc.packet)
		o.testIV = unhex(t, tc.iv)
		o.seq.Store(tc.seq - 1)
		buf := make([]byte, HeaderRoom+len(payload)+TailRoom)
		copy(buf[HeaderRoom:], payload)
		pkt, err := o.Seal(buf, HeaderRoom, len(payload), tc.nh)
		if err != nil {
			t.Fatalf("%s: Seal: %v", tc.src, err)
		}
		if !bytes.Equal(pkt, want) {
			t.Errorf("%s: Seal =\n%x\nwant\n%x", tc.src, pkt, want)
		}
		if got := o.Overhead(len(payload)); got != len(want)-len(payload) {
			t.Errorf("%s: Overhead = %d, want %d", tc.src, got, len(want)-len(payload))
		}
		pl, nh, seq, err := in.Open(append([]byte(nil), want...))
		if err != nil || nh != tc.nh || seq != tc.seq || !bytes.Equal(pl, payload) {
			t.Errorf("%s: Open = %x, %d, %d, %v", tc.src, pl, nh, seq, err)
		}
		if pads := len(want) - ESPHeaderLen - AESBlockSize - len(payload) - TrailerLen; pads != tc.wantPads {
			t.Errorf("%s: vector has %d padding bytes, want %d", tc.src, pads, tc.wantPads)
		}
	}
}

// TestKATESPAESGCM checks whole ESP packets against the AES-GCM ESP test
// cases of draft-mcgrew-gcm-test-01 §4 (the ones RFC 4106 lacks). Each row
// gives key, nonce = salt || explicit IV, AAD = SPI || [seq hi ||] seq lo,
// the ESP plaintext (payload, padding, pad length, next header), ciphertext
// and tag. A 12-octet AAD is an ESN SA (RFC 4106 §5).
func TestKATESPAESGCM(t *testing.T) {
	const src = "draft-mcgrew-gcm-test-01 §4 "
	for _, tc := range []struct{ case_, key, nonce, pt, aad, ct, tag string }{
		{"Test Case 1", "4c80cdefbb5d10da906ac73c3613a634", "2e443b684956ed7e3b244cfe",
			"45000048699a000080114db7c0a80102c0a801010a9bf15638d301000001000000000000045f736970045f756470037369700963796265726369747902646b000021000101020201",
			"000043218765432100000000",
			"fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34cfa2436f14a3f3cf65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce61bc17d768fd9732", "459018148f6cbe722fd04796562dfdb4"},
		{"Test Case 2", "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
			"4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d001000001000000000000037369700963796265726369747902646b00000100010001",
			"0000a5f80000000a",
			"deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1", "83b70d3aa8bc6ee4c309e9d85a41ad4a"},
		{"Test Case 3", "abbccddef00112233445566778899aababbccddef00112233445566778899aab", "112233440102030405060708",
			"4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee0000000007002400020bf0000020405b40101040201020201",
			"4a2cbfe300000002",
			"ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763748a637985771d347f0545659f14e99def842d8e", "b335f4eecfdbf831824b4c4915956c96"},
		{"Test Case 4", "00000000000000000000000000000000", "000000000000000000000000",
			"4500003c99c500008001cb7a40679318010101010800075c020044006162636465666768696a6b6c6d6e6f707172737475767761626364656667686901020201",
			"0000000000000001",
			"4688daf2f973a392732909c331d56d60f694abaa414b5e7ff5fdcdfff5e9a284456476492719ffb64de7d9dca1e1d894bc3bd57873ed4d181d19d4d5c8c18af3", "f821d496eeb096e98ad2b69e4799c71d"},
		{"Test Case 5", "3de09874b388e6491988d0c3607eae1f", "57690e434e280000a2fca1a3",
			"4500003c99c300008001cb7c40679318010101010800085c020043006162636465666768696a6b6c6d6e6f707172737475767761626364656667686901020201",
			"42f67e3f1010101010101010",
			"fba2caa4853cf9f0f22cb10d86dd83b0fec75691cf1a04b00d1138ec9c35791765acbd8701ad79845bf9fe3fba487bc91755e6662b4c8d0d1f5e22739530320a", "e0d731cc978ecafaeae88f00e80d6e48"},
		{"Test Case 6", "3de09874b388e6491988d0c3607eae1f", "57690e434e280000a2fca1a3",
			"4500001c42a200008001441f406793b6e00000020a00f5ff01020201",
			"42f67e3f1010101010101010",
			"fba2ca845e5df9f0f22c3e6e86dd831e1fc65792cd1af9130e1379ed", "369f071f35e034be95f112e4e7d05d35"},
		{"Test Case 7", "feffe9928665731c6d6a8f9467308308feffe9928665731c", "cafebabefacedbaddecaf888",
			"45000028a4ad4000400678800a01038f0a010612802306b8cb712602dd6bb03e501016d075680001",
			"0000a5f80000000a",
			"a5b1f8066029aea40e598b8122de02420938b3ab33f828e687b8858b5bfbdbd0315b27452144cc77", "95457b9652037f5318027b5b4cd7a636"},
		{"Test Case 8", "abbccddef00112233445566778899aab", "decaf888cafedebaceface74",
			"4500004933ba00007f119106c3fb1d10c2b1d326c02831ce0035dd7b800302d500004e20001e8c18d75b81dc91baa0476b91b924b280389d92c963bac046ec959b6266c04722b14923010101",
			"000001000000000000000001",
			"18a6fd42f72cbf4ab2a2ea901f73d814e3e7f243d95412e1c349c1d2fbec168f9190feebaf2cb01984e65863965d7472b79da345e0e780191f0d2f0e0f496c226f2127b27db35724e7845d68", "651f57e65f354f75ff17015769623436"},
		{"Test Case 9", "abbccddef00112233445566778899aababbccddef00112233445566778899aab", "73616c74616e640169766563",
			"45080028732c00004006e9f90a0106120a01038f06b88023dd6bafbecb71260250101f646d540001",
			"17405e67156f3126dd0db99b",
			"f2d69ecdbd5a0d5b8d5ef38bad4da58d1f278fde98ef67549d524a3018d9a57ff4d3a31ce673119e", "451626c2415771e3b7eebca614c89b35"},
		{"Test Case 10", "3de09874b388e6491988d0c3607eae1f", "57690e434e280000a2fca1a3",
			"45000049333e00007f119182c3fb1d10c2b1d326c02831ce0035cb458003025b000001e0001e8c18d65759d52284a0352c71475c8880391c764d6e5ee0496b325ae270c03899493915010101",
			"42f67e3f1010101010101010",
			"fba2cad12fc1f9f00d3cebf305410db83d7784b607323d220f24b0a97d54182800cadb0f68d99ef0e0c0c89ae9bea8884e52d65bc1afd0740f742444747b5b39ab533163aad4550ee5160975", "cdb608c5769189609763b8e18caa81e2"},
		{"Test Case 11", "abbccddef00112233445566778899aababbccddef00112233445566778899aab", "73616c74616e640169766563",
			"636973636f0172756c657301746865016e6574776501646566696e6501746865746563686e6f6c6f67696573017468617477696c6c01646566696e65746f6d6f72726f7701020201",
			"17405e67156f3126dd0db99b",
			"d4b7ed86a1777f2ea13d6973d324c69e7b43f826fb56831226508bebd2dceb18d0a6df10e5487df074113e14c641024e3e6773d91a62ee429b043a10e3efe6b012a49363412364f8", "c0cac587f249e56b11e24f30e44ccc76"},
		{"Test Case 12", "7d773d00c144c525ac619d18c84a3f47", "d966426743457e9182443bc6",
			"01020201",
			"335467aeffffffff",
			"437f866b", "cb3f699fe9b0822bac961c4504bef270"},
		{"Test Case 13", "abbccddef00112233445566778899aab", "decaf888cafedebaceface74",
			"746f016265016f72016e6f7401746f0162650001",
			"000001000000000000000001",
			"29c9fc69a197d038ccdd14e2ddfcaa0543332164", "412503524303ed3c6c5f283843af8c3e"},
		{"Test Case 14", "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961", "7475726e333021696765746d",
			"45000030da3a00008001df3bc0a80005c0a800010800c6cd020007006162636465666768696a6b6c6d6e6f707172737401020201",
			"796b6963ffffffffffffffff",
			"f97ab2aa356d8edce17644ac8c78e25dd24dedbb29ebf1b64a274b39b49c3a864cd3d78ca4ae68a32b42458fb57dbe821dcc63b9", "d0937ba2945f669368661a329fb4c053"},
	} {
		name := src + tc.case_
		key, nonce, pt, aad := unhex(t, tc.key), unhex(t, tc.nonce), unhex(t, tc.pt), unhex(t, tc.aad)
		esn := len(aad) == 12
		var seq uint64
		for _, b := range aad[4:] {
			seq = seq<<8 | uint64(b)
		}
		spi := SPI(uint32(aad[0])<<24 | uint32(aad[1])<<16 | uint32(aad[2])<<8 | uint32(aad[3]))
		// The wire packet: SPI, low 32 bits of seq, IV, ciphertext, tag.
		want := append(append(append(append([]byte(nil), aad[:4]...), aad[len(aad)-4:]...), nonce[4:]...), unhex(t, tc.ct+tc.tag)...)
		padLen := int(pt[len(pt)-2])
		payload, nh := pt[:len(pt)-2-padLen], pt[len(pt)-1]

		// Vectors use the AAD's SPI, which may be a reserved value (Test
		// Case 4 uses 0); we set it after construction.
		c := Config{SPI: 0x1000, Mode: Transport, Encryption: EncAESGCM, EncKey: append(append([]byte(nil), key...), nonce[:4]...), Integrity: AuthNull, ESN: esn}
		in, err := NewInbound(c)
		if err != nil {
			t.Fatal(name, err)
		}
		in.spi = spi
		if seq > 1 {
			in.win.top.Store(seq - 1) // so that an ESN receiver infers the high bits
		}
		got, gotNH, gotSeq, err := in.Open(append([]byte(nil), want...))
		if err != nil || gotNH != nh || gotSeq != seq || !bytes.Equal(got, payload) {
			t.Errorf("%s: Open = %x, %d, %#x, %v; want %x, %d, %#x", name, got, gotNH, gotSeq, err, payload, nh, seq)
		}

		// Seal reproduces the packet when the vector's padding is the
		// minimal 4-octet alignment we produce (true of all but one).
		o, err := NewOutbound(c)
		if err != nil {
			t.Fatal(name, err)
		}
		o.spi = spi
		o.seq.Store(seq - 1)
		o.testIV = nonce[4:]
		if o.a.padLen(len(payload)) != padLen {
			t.Logf("%s: vector pads %d octets, we pad %d: checking Open only", name, padLen, o.a.padLen(len(payload)))
			continue
		}
		buf := make([]byte, HeaderRoom+len(payload)+TailRoom)
		copy(buf[HeaderRoom:], payload)
		p, err := o.Seal(buf, HeaderRoom, len(payload), nh)
		if err != nil {
			t.Fatalf("%s: Seal: %v", name, err)
		}
		if !bytes.Equal(p, want) {
			t.Errorf("%s: Seal =\n%x\nwant\n%x", name, p, want)
		}
	}
}

// TestKATHMAC runs the HMAC test cases of RFC 2202 (MD5, SHA-1) and
// RFC 4231 (SHA-256) through the hash our SAs use, truncated to our ICV
// length (RFC 2403/2404: 96 bits, RFC 4868: 128 bits).
func TestKATHMAC(t *testing.T) {
	dd := strings.Repeat("dd", 50)
	for _, tc := range []struct {
		src  string
		alg  AuthAlg
		key  string
		data string
		mac  string
	}{
		{"RFC 2202 §3 test_case 1", AuthHMACSHA196, strings.Repeat("0b", 20), hex.EncodeToString([]byte("Hi There")), "b617318655057264e28bc0b6fb378c8ef146be00"},
		{"RFC 2202 §3 test_case 2", AuthHMACSHA196, hex.EncodeToString([]byte("Jefe")), hex.EncodeToString([]byte("what do ya want for nothing?")), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"},
		{"RFC 2202 §3 test_case 3", AuthHMACSHA196, strings.Repeat("aa", 20), dd, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"},
		{"RFC 2202 §3 test_case 5", AuthHMACSHA196, strings.Repeat("0c", 20), hex.EncodeToString([]byte("Test With Truncation")), "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"},
		{"RFC 2202 §2 test_case 1", AuthHMACMD596, strings.Repeat("0b", 16), hex.EncodeToString([]byte("Hi There")), "9294727a3638bb1c13f48ef8158bfc9d"},
		{"RFC 2202 §2 test_case 2", AuthHMACMD596, hex.EncodeToString([]byte("Jefe")), hex.EncodeToString([]byte("what do ya want for nothing?")), "750c783e6ab0b503eaa86e310a5db738"},
		{"RFC 2202 §2 test_case 3", AuthHMACMD596, strings.Repeat("aa", 16), dd, "56be34521d144c88dbb8c733f0e8b3f6"},
		{"RFC 2202 §2 test_case 5", AuthHMACMD596, strings.Repeat("0c", 16), hex.EncodeToString([]byte("Test With Truncation")), "56461ef2342edc00f9bab995690efd4c"},
		{"RFC 4231 §4.2 Test Case 1", AuthHMACSHA256128, strings.Repeat("0b", 20), hex.EncodeToString([]byte("Hi There")), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
		{"RFC 4231 §4.3 Test Case 2", AuthHMACSHA256128, hex.EncodeToString([]byte("Jefe")), hex.EncodeToString([]byte("what do ya want for nothing?")), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
	} {
		h, icv := macHash(tc.alg)
		m := hmac.New(h, unhex(t, tc.key))
		m.Write(unhex(t, tc.data))
		got := m.Sum(nil)[:icv]
		if want := unhex(t, tc.mac)[:icv]; !bytes.Equal(got, want) {
			t.Errorf("%s (%s): %x, want %x", tc.src, tc.alg, got, want)
		}
	}
}
