package password

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// Reference vectors. None is produced by this package: each was generated
// by an independent implementation and is pasted here verbatim (apart from
// the $2b$ -> $2y$/$2a$ relabelling noted below):
//
//	openssl passwd -6 -salt saltstring 'Hello world!'           (OpenSSL)
//	openssl passwd -5 -salt saltstring 'Hello world!'
//	python3.11 -c "import crypt; print(crypt.crypt(PW, SETTING))" (libxcrypt)
//	echo -n PW | argon2 SALT -id -t T -m LOG2M -p P [-l LEN] -e   (Debian argon2, the reference C implementation)
//
// bcrypt vectors come from python's crypt with METHOD_BLOWFISH, which emits
// $2b$; $2a$, $2b$ and $2y$ denote the same computation for these inputs,
// so the same string is also tested relabelled as $2y$ (Dovecot's form)
// and $2a$.
const (
	helloWorld = "Hello world!"

	sha512Default   = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
	sha512R1000     = "$6$rounds=1000$saltstring$Zu2Vknok2/f53APfN687ADnzeNBLcsEgTwvcBHMD2./07rZQAt8vsuKVufD15dyZh.LOLB/uZKf6I3GyON4bp/"
	sha512R5000     = "$6$rounds=5000$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
	sha512R10000    = "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
	sha512Empty     = "$6$emptypw$TWmzQ8/uLn1BFSZ5Lkfum8lAba5vixF9Nl3Aiof.Praatq9nh0kkPuTdoVrIL6du0L6LAoadbPq.q.D7keveg/"
	sha512LongPw    = "$6$rounds=1000$longpw$7wDP4lkI27LGQYxGA5T6tSSCeq9qYUYvd5VxtEdOOf9EtuO39OvyrmA4eCX2ZGbsgOcefSM1zttAV2OUOqCNn1"
	sha512UTF8      = "$6$utf8salt$N01jgqFBhsKwlNXM2EVF4AjneyxGIkQPOVbzlEbnJPmMjMaA3k/V2e8pZpj0GUkyltwjFXc33HDE.VALq2KS01"
	sha256Default   = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
	sha256R10000    = "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"
	sha256R5000Long = "$5$rounds=5000$toolongsaltstrin$0vuwUia3Nx9V/DqToMS8YLcfXpEXmSaC8wgguLIbus2" // setting had salt "toolongsaltstring"
	sha256R1000     = "$5$rounds=1000$roundstoolow$BiO0thfsibXRWnVAhxypb/bDS/8S0KICVgPbqzirYmC"
	sha256Empty     = "$5$emptypw$j9q8SS0S/38BPIfLsJXsxKvW/sehZJL1AxFdvBj6YQ2"

	bcrypt04   = "$2b$04$fbGvxlr2.yc78STHdEFJS.5zNxqgZMZDK2Ji4ggBDvqYt.k5MAWVq"                           // "secret"
	bcrypt05   = "$2b$05$/XqzEQ4NdwNPsrRH8L4CUeiCk6keOwyVpKpKE1cXZJq3Qtp/lzBpe"                           // "Hello world!"
	bcrypt12   = "$2b$12$yP438eD8QBk8C4DtTMPXpuhvvpV.iL4DG2J2m0WT0uYoc1gdJt8RS"                           // "secret", python's default cost; ~3 s under -race, so only parsed
	bcrypt72   = "$2b$04$abcdefghijklmnopqrstuubzadhGtS2zEF.gu0yd0opP6cVzb.e0i"                           // 72 x "x"; 100 x "x" gave the same
	argon2Ref  = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc" // "password", salt "somesalt", -m 16
	argon2P2   = "$argon2id$v=19$m=4096,t=2,p=2$c2FsdHNhbHRzYWx0c2FsdA$MjckT5vdz6Dl314tOfw2G7r2a9TMEqJOTN/frI12zeE"
	argon2K16  = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$f1ku/vweyie6dRUB/3h16Q"
	argon2Min  = "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$rU+STQ" // 8-byte salt, 4-byte key
	argon2iRef = "$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$GsvMv5uicGTVg0FUlHkXxTqg6aD1onBO6nSgdLKhkg4"
)

// relabel swaps a bcrypt hash's "$2b$" tag for another minor version.
func relabel(h, tag string) string { return tag + strings.TrimPrefix(h, "$2b$") }

func TestVerifyKnownVectors(t *testing.T) {
	tests := []struct {
		name, hash, pw string
	}{
		{"sha512 openssl", sha512Default, helloWorld},
		{"sha512 prefixed", "{SHA512-CRYPT}" + sha512Default, helloWorld},
		{"sha512 prefix lower case", "{sha512-crypt}" + sha512Default, helloWorld},
		{"sha512 rounds=1000", sha512R1000, helloWorld},
		{"sha512 explicit rounds=5000", sha512R5000, helloWorld},
		{"sha512 rounds=10000", "{SHA512-CRYPT}" + sha512R10000, helloWorld},
		{"sha512 empty password", sha512Empty, ""},
		{"sha512 100-byte password", sha512LongPw, strings.Repeat("x", 100)},
		{"sha512 utf-8 password", sha512UTF8, "päss"},
		{"sha256 openssl", sha256Default, helloWorld},
		{"sha256 prefixed", "{SHA256-CRYPT}" + sha256Default, helloWorld},
		{"sha256 rounds=10000", sha256R10000, helloWorld},
		{"sha256 truncated salt", sha256R5000Long, helloWorld},
		{"sha256 rounds=1000", sha256R1000, helloWorld},
		{"sha256 empty password", sha256Empty, ""},
		{"bcrypt 2b", bcrypt04, "secret"},
		{"bcrypt 2y prefixed", "{BLF-CRYPT}" + relabel(bcrypt04, "$2y$"), "secret"},
		{"bcrypt 2y bare", relabel(bcrypt05, "$2y$"), helloWorld},
		{"bcrypt 2a", relabel(bcrypt05, "$2a$"), helloWorld},
		{"bcrypt prefix mixed case", "{Blf-Crypt}" + bcrypt05, helloWorld},
		{"bcrypt 72 bytes", bcrypt72, strings.Repeat("x", 72)},
		{"bcrypt ignores bytes past 72", bcrypt72, strings.Repeat("x", 100)},
		{"argon2id reference", "{ARGON2ID}" + argon2Ref, "password"},
		{"argon2id p=2", argon2P2, helloWorld},
		{"argon2id 16-byte key", "{argon2id}" + argon2K16, helloWorld},
		{"argon2id minimum sizes", argon2Min, helloWorld},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := Check(tc.hash); err != nil {
				t.Fatalf("Check: %v", err)
			}
			ok, err := Verify(tc.hash, tc.pw)
			if !ok || err != nil {
				t.Fatalf("Verify(right password) = %v, %v; want true, nil", ok, err)
			}
			for _, wrong := range []string{tc.pw + "!", "!" + tc.pw, "Hello world?", ""} {
				if wrong == tc.pw || len(wrong) > 72 && isBcrypt(tc.hash) {
					// bcrypt only sees the first 72 bytes, so a
					// suffix past them is not a different password.
					continue
				}
				ok, err := Verify(tc.hash, wrong)
				if ok || err != nil {
					t.Errorf("Verify(wrong password %q) = %v, %v; want false, nil", wrong, ok, err)
				}
			}
		})
	}
}

func isBcrypt(hash string) bool {
	h, _ := parse(hash)
	_, ok := h.(*bcryptHash)
	return ok
}

// secretPW is a password distinctive enough that finding it in an error
// message can only mean it leaked there.
const secretPW = "Tr0ub4dor&3-correct-horse"

func TestVerifyRejectsBadHashes(t *testing.T) {
	sha512Body := strings.TrimPrefix(sha512Default, "$6$saltstring$")
	tests := []struct {
		name, hash string
		want       error
	}{
		{"empty", "", ErrUnknownScheme},
		{"plaintext", "hunter2-plain", ErrUnknownScheme},
		{"dovecot PLAIN holding the password", "{PLAIN}" + secretPW, ErrUnknownScheme},
		{"unknown prefix", "{FOO}bar", ErrUnknownScheme},
		{"argon2i prefixed", "{ARGON2I}" + argon2iRef, ErrUnknownScheme},
		{"argon2i bare", argon2iRef, ErrUnknownScheme},
		{"md5-crypt", "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", ErrUnknownScheme},
		{"bcrypt 2x", relabel(bcrypt04, "$2x$"), ErrUnknownScheme},
		{"des crypt", "abJnggxhB/yWI", ErrUnknownScheme},
		{"unterminated prefix", "{SHA512-CRYPT" + sha512Default, ErrMalformed},
		{"prefix only", "{SHA512-CRYPT}", ErrMalformed},
		{"prefix with garbage", "{ARGON2ID}" + secretPW, ErrMalformed},
		{"prefix mismatch sha", "{SHA512-CRYPT}" + sha256Default, ErrMalformed},
		{"prefix mismatch argon2", "{ARGON2ID}" + bcrypt04, ErrMalformed},
		{"too long", "$6$saltstring$" + strings.Repeat("a", 2000), ErrMalformed},

		{"sha512 truncated", sha512Default[:len(sha512Default)-1], ErrMalformed},
		{"sha512 extra char", sha512Default + "a", ErrMalformed},
		{"sha512 no digest", "$6$saltstring", ErrMalformed},
		{"sha512 empty digest", "$6$saltstring$", ErrMalformed},
		{"sha512 rounds=0", "$6$rounds=0$saltstring$" + sha512Body, ErrMalformed},
		{"sha512 rounds=999", "$6$rounds=999$saltstring$" + sha512Body, ErrMalformed},
		{"sha512 rounds too big", "$6$rounds=1000000000$saltstring$" + sha512Body, ErrMalformed},
		{"sha512 rounds leading zero", "$6$rounds=05000$saltstring$" + sha512Body, ErrMalformed},
		{"sha512 rounds negative", "$6$rounds=-5000$saltstring$" + sha512Body, ErrMalformed},
		{"sha512 rounds not a number", "$6$rounds=abc$saltstring$" + sha512Body, ErrMalformed},
		{"sha512 rounds empty", "$6$rounds=$saltstring$" + sha512Body, ErrMalformed},
		{"sha512 rounds truncated", "$6$rounds=5000", ErrMalformed},
		{"sha512 salt too long", "$6$saltstringsaltstr$" + sha512Body, ErrMalformed},
		{"sha512 control char in salt", "$6$salt\nstring$" + sha512Body, ErrMalformed},
		{"sha512 bad digest char", "$6$saltstring$" + sha512Body[:40] + "_" + sha512Body[41:], ErrMalformed},
		{"sha512 non-canonical last char", "$6$saltstring$" + sha512Body[:85] + "z", ErrMalformed},
		{"sha256 truncated", sha256Default[:len(sha256Default)-3], ErrMalformed},
		{"sha256 non-canonical last char", sha256Default[:len(sha256Default)-1] + "z", ErrMalformed},

		{"bcrypt truncated", bcrypt04[:59], ErrMalformed},
		{"bcrypt only setting", "$2y$10$", ErrMalformed},
		{"bcrypt cost 03", "$2y$03$" + bcrypt04[7:], ErrMalformed},
		{"bcrypt cost 32", "$2y$32$" + bcrypt04[7:], ErrMalformed},
		{"bcrypt cost not digits", "$2y$1x$" + bcrypt04[7:], ErrMalformed},
		{"bcrypt one-digit cost", "$2y$4$" + bcrypt04[7:] + "a", ErrMalformed},
		{"bcrypt bad char", "$2y$04$" + bcrypt04[7:30] + "+" + bcrypt04[31:], ErrMalformed},
		{"bcrypt non-canonical salt", "$2y$04$" + bcrypt04[7:28] + "/" + bcrypt04[29:], ErrMalformed},
		{"bcrypt non-canonical digest", bcrypt04[:59] + "T", ErrMalformed},

		{"argon2 truncated", argon2P2[:40], ErrMalformed},
		{"argon2 no version", "$argon2id$m=4096,t=2,p=2$c2FsdHNhbHRzYWx0c2FsdA$MjckT5vdz6Dl314tOfw2G7r2a9TMEqJOTN/frI12zeE", ErrMalformed},
		{"argon2 v=16", strings.Replace(argon2P2, "v=19", "v=16", 1), ErrMalformed},
		{"argon2 m=0", strings.Replace(argon2P2, "m=4096", "m=0", 1), ErrMalformed},
		{"argon2 m below 8p", strings.Replace(argon2P2, "m=4096", "m=15", 1), ErrMalformed},
		{"argon2 m over 4 GiB", strings.Replace(argon2P2, "m=4096", "m=4194305", 1), ErrMalformed},
		{"argon2 m overflows", strings.Replace(argon2P2, "m=4096", "m=99999999999999999999999", 1), ErrMalformed},
		{"argon2 m leading zero", strings.Replace(argon2P2, "m=4096", "m=04096", 1), ErrMalformed},
		{"argon2 t=0", strings.Replace(argon2P2, "t=2", "t=0", 1), ErrMalformed},
		{"argon2 t=101", strings.Replace(argon2P2, "t=2", "t=101", 1), ErrMalformed},
		{"argon2 p=0", strings.Replace(argon2P2, "p=2", "p=0", 1), ErrMalformed},
		{"argon2 p=256", strings.Replace(argon2P2, "m=4096,t=2,p=2", "m=65536,t=2,p=256", 1), ErrMalformed},
		{"argon2 params reordered", strings.Replace(argon2P2, "m=4096,t=2,p=2", "t=2,m=4096,p=2", 1), ErrMalformed},
		{"argon2 extra param", strings.Replace(argon2P2, "p=2", "p=2,data=abc", 1), ErrMalformed},
		{"argon2 missing param", strings.Replace(argon2P2, ",p=2", "", 1), ErrMalformed},
		{"argon2 bad base64 salt", strings.Replace(argon2P2, "c2FsdHNhbHRz", "c2FsdHNh!HRz", 1), ErrMalformed},
		{"argon2 newline in salt", strings.Replace(argon2P2, "c2FsdHNhbHRz", "c2FsdHNh\nbHRz", 1), ErrMalformed},
		{"argon2 padded salt", strings.Replace(argon2P2, "c2FsdA$", "c2FsdA==$", 1), ErrMalformed},
		{"argon2 non-canonical base64", strings.Replace(argon2P2, "c2FsdA$", "c2FsdB$", 1), ErrMalformed},
		{"argon2 url-safe base64 key", strings.Replace(argon2P2, "N/frI", "N_frI", 1), ErrMalformed},
		{"argon2 empty key", strings.TrimSuffix(argon2P2, "MjckT5vdz6Dl314tOfw2G7r2a9TMEqJOTN/frI12zeE"), ErrMalformed},
		{"argon2 key too short", "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$rU+S", ErrMalformed},
		{"argon2 salt too short", "$argon2id$v=19$m=256,t=1,p=1$c2FsdA$rU+STQ", ErrMalformed},
		{"argon2 extra field", argon2P2 + "$AAAA", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := Verify(tc.hash, secretPW)
			if ok || !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, %v; want false and an error wrapping %v", ok, err, tc.want)
			}
			cerr := Check(tc.hash)
			if !errors.Is(cerr, tc.want) {
				t.Fatalf("Check = %v; want an error wrapping %v", cerr, tc.want)
			}
			if cerr.Error() != err.Error() {
				t.Errorf("Check and Verify disagree: %q vs %q", cerr, err)
			}
			msg := err.Error()
			if strings.Contains(msg, secretPW) {
				t.Errorf("error %q contains the password", msg)
			}
			if len(tc.hash) >= 8 && strings.Contains(msg, tc.hash) {
				t.Errorf("error %q contains the hash", msg)
			}
			if !NeedsRehash(tc.hash, Argon2id) || !NeedsRehash(tc.hash, Bcrypt) {
				t.Errorf("NeedsRehash = false for a bad hash")
			}
		})
	}
}

// TestErrorsNameTheScheme checks that messages say which scheme is at
// fault (SPEC R2 import diagnostics) without echoing unknown input.
func TestErrorsNameTheScheme(t *testing.T) {
	tests := []struct{ hash, want string }{
		{"$6$rounds=0$saltstring$x", "SHA512-CRYPT"},
		{"{sha256-crypt}$5$x", "SHA256-CRYPT"},
		{"$2y$99$", "BLF-CRYPT"},
		{"$argon2id$v=19$m=1,t=1,p=1$x$y", "ARGON2ID"},
		{"{ARGON2I}$argon2i$whatever", "ARGON2I"},
		{"{PLAIN.b64}c2VjcmV0", "PLAIN"},
		{"$1$abc$def", "MD5-CRYPT"},
	}
	for _, tc := range tests {
		err := Check(tc.hash)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%q) = %v; want a message naming %s", tc.hash, err, tc.want)
		}
	}
	// An unknown prefix or format is not echoed: it could be anything,
	// including a plaintext password imported by mistake.
	for _, h := range []string{"{" + secretPW + "}x", "$" + secretPW + "$x", secretPW} {
		err := Check(h)
		if err == nil || strings.Contains(err.Error(), secretPW) {
			t.Errorf("Check(%q) = %v; want an error not echoing the input", h, err)
		}
	}
}

func TestHashRoundTrip(t *testing.T) {
	tests := []struct {
		scheme string
		format *regexp.Regexp
	}{
		{Argon2id, regexp.MustCompile(`^\{ARGON2ID\}\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)},
		{Bcrypt, regexp.MustCompile(`^\{BLF-CRYPT\}\$2y\$10\$[./A-Za-z0-9]{53}$`)},
	}
	for _, tc := range tests {
		t.Run(tc.scheme, func(t *testing.T) {
			h, err := Hash(tc.scheme, secretPW)
			if err != nil {
				t.Fatalf("Hash: %v", err)
			}
			if !tc.format.MatchString(h) {
				t.Fatalf("Hash = %q; want match for %s", h, tc.format)
			}
			if strings.Contains(h, secretPW) {
				t.Fatalf("hash contains the password")
			}
			if err := Check(h); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if ok, err := Verify(h, secretPW); !ok || err != nil {
				t.Fatalf("Verify(right) = %v, %v", ok, err)
			}
			if ok, err := Verify(h, secretPW+"x"); ok || err != nil {
				t.Fatalf("Verify(wrong) = %v, %v", ok, err)
			}
			if NeedsRehash(h, tc.scheme) {
				t.Errorf("NeedsRehash(new hash, %s) = true", tc.scheme)
			}
			// A fresh salt each time: equal passwords give unequal hashes.
			h2, err := Hash(strings.ToUpper(tc.scheme), secretPW)
			if err != nil || h2 == h {
				t.Errorf("second Hash = %q, %v; want a different hash", h2, err)
			}
		})
	}
}

func TestHashErrors(t *testing.T) {
	tests := []struct {
		name, scheme, pw string
		want             error
	}{
		{"unknown scheme", "scrypt", secretPW, ErrUnknownScheme},
		{"dovecot name is not a config name", "SHA512-CRYPT", secretPW, ErrUnknownScheme},
		{"arguments swapped", secretPW, Argon2id, ErrUnknownScheme},
		{"bcrypt over 72 bytes", Bcrypt, secretPW + strings.Repeat("x", 72), nil},
		{"too long", Argon2id, secretPW + strings.Repeat("x", maxPasswordLen), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Hash(tc.scheme, tc.pw)
			if err == nil {
				t.Fatalf("Hash = %q, nil; want an error", h)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Hash error %v; want one wrapping %v", err, tc.want)
			}
			if strings.Contains(err.Error(), secretPW) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

func TestVerifyOverlongPassword(t *testing.T) {
	ok, err := Verify(sha512Default, strings.Repeat("x", maxPasswordLen+1))
	if ok || err != nil {
		t.Fatalf("Verify = %v, %v; want false, nil", ok, err)
	}
	// A malformed hash is still reported, whatever the password.
	if _, err := Verify("$6$bad", strings.Repeat("x", maxPasswordLen+1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Verify(malformed) error = %v; want ErrMalformed", err)
	}
}

func TestNeedsRehash(t *testing.T) {
	tests := []struct {
		hash, scheme string
		want         bool
	}{
		{"{ARGON2ID}" + argon2P2, Argon2id, false},
		{argon2P2, "ARGON2ID", false},
		{argon2P2, Bcrypt, true},
		{"{BLF-CRYPT}" + relabel(bcrypt04, "$2y$"), Bcrypt, false},
		{bcrypt04, Bcrypt, false},
		{"{BLF-CRYPT}" + relabel(bcrypt12, "$2y$"), Bcrypt, false},
		{bcrypt12, Argon2id, true},
		{relabel(bcrypt04, "$2a$"), Argon2id, true},
		{"{SHA512-CRYPT}" + sha512Default, Argon2id, true},
		{sha512Default, Bcrypt, true},
		{sha256Default, Argon2id, true},
		{argon2iRef, Argon2id, true},
		{"$6$rounds=0$x$y", Argon2id, true},
		{argon2P2, "scrypt", true},
		{argon2P2, "", true},
	}
	for _, tc := range tests {
		if got := NeedsRehash(tc.hash, tc.scheme); got != tc.want {
			t.Errorf("NeedsRehash(%.30q…, %q) = %v; want %v", tc.hash, tc.scheme, got, tc.want)
		}
	}
}

// TestSHACryptEncodingLengths guards the permutation tables: every digest
// byte must be used exactly once.
func TestSHACryptEncodingLengths(t *testing.T) {
	for _, v := range []*shaCryptVariant{sha256Crypt, sha512Crypt} {
		seen := make(map[int]int)
		for _, g := range v.perm {
			for _, i := range g {
				seen[i]++
			}
		}
		for _, i := range v.tail {
			if i >= 0 {
				seen[i]++
			}
		}
		for i := range v.size {
			if seen[i] != 1 {
				t.Errorf("%s: byte %d used %d times", v.scheme, i, seen[i])
			}
		}
		if n := len(shaCryptEncode(v, make([]byte, v.size))); n != v.encLen {
			t.Errorf("%s: encoded length %d; want %d", v.scheme, n, v.encLen)
		}
	}
}

// FuzzVerify feeds arbitrary hash/password pairs to Verify. It must never
// panic, must report every failure through ErrMalformed or
// ErrUnknownScheme, and its error must not depend on (so cannot contain)
// the password. The committed corpus in testdata/fuzz/FuzzVerify holds each
// scheme's vector and malformed variants of it.
func FuzzVerify(f *testing.F) {
	for _, h := range []string{sha512Default, sha256Default, bcrypt04, argon2K16} {
		f.Add(h, helloWorld)
	}
	f.Fuzz(func(t *testing.T, hash, pw string) {
		if h, err := parse(hash); err == nil && tooCostlyToFuzz(h) {
			// Legitimately expensive parameters (up to the documented
			// limits) would only slow the fuzzer down.
			t.Skip()
		}
		ok, err := Verify(hash, pw)
		cerr := Check(hash)
		if (err == nil) != (cerr == nil) {
			t.Fatalf("Verify error %v but Check error %v", err, cerr)
		}
		if err == nil {
			return
		}
		if ok {
			t.Fatalf("Verify = true with error %v", err)
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownScheme) {
			t.Fatalf("error %v wraps neither ErrMalformed nor ErrUnknownScheme", err)
		}
		// Check never sees the password, so equal texts prove the
		// password is not in Verify's error.
		if err.Error() != cerr.Error() {
			t.Fatalf("Verify error %q differs from Check error %q", err, cerr)
		}
		// Messages are built from fixed text, so they stay short however
		// long the hash is.
		if len(err.Error()) > 120 {
			t.Fatalf("error message too long (%d bytes): %q", len(err.Error()), err)
		}
	})
}

// tooCostlyToFuzz reports whether verifying h would take more than a few
// milliseconds.
func tooCostlyToFuzz(h parsedHash) bool {
	switch h := h.(type) {
	case *argon2Hash:
		return uint64(h.memory)*uint64(h.time) > 1<<16
	case *bcryptHash:
		c, _ := parseTwoDigits(h.s[4:6])
		return c > 6
	case *shaCryptHash:
		return h.rounds > 10000
	}
	return false
}
