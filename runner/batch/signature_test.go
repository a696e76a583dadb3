package batch

import "testing"

func TestSignatureTellsShapesApart(t *testing.T) {
	cols := []Column{{Name: "id", Type: 20}, {Name: "v", Type: 25}}
	same := []Column{{Name: "id", Type: 20}, {Name: "v", Type: 25}}
	cases := []struct {
		name    string
		cols    []Column
		formats []int16
		equal   bool
	}{
		{name: "same columns", cols: same, equal: true},
		{name: "other type", cols: []Column{{Name: "id", Type: 20}, {Name: "v", Type: 1184}}},
		{name: "other name", cols: []Column{{Name: "id", Type: 20}, {Name: "w", Type: 25}}},
		{name: "names not run together", cols: []Column{{Name: "i", Type: 20}, {Name: "dv", Type: 25}}},
		{name: "formats given", cols: same, formats: []int16{1, 1}},
	}
	base := Signature(cols, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Signature(tc.cols, tc.formats) == base; got != tc.equal {
				t.Errorf("Signature equal to the base = %v, want %v", got, tc.equal)
			}
		})
	}
	if Signature(cols, []int16{0, 1}) == Signature(cols, []int16{1, 1}) {
		t.Error("formats 0,1 and 1,1 give the same signature")
	}
}
