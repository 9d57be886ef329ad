package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
)

// The contract of an Argo CD health customization (resource.customizations.health.<group>_<kind>
// in argocd-cm), as Argo CD's util/lua and gitops-engine's pkg/health keep it; written here
// after reading them, so that our scripts are tested the way Argo CD runs them:
//
//   - an object with a deletionTimestamp is Progressing ("Pending deletion"): the script is
//     not run;
//   - gopher-lua (Lua 5.1) without its standard libraries, then only package, base and table
//     opened; `os` is not a global (Argo CD preloads a safe os with time and date, reachable
//     through require("os"));
//   - the object is the global `obj`, converted value by value (integers are numbers);
//   - the script has one second;
//   - a returned table is encoded to JSON and read as {status, message}; a status that is not
//     one of Argo CD's health codes becomes Unknown; a script error is Unknown with the error.

var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Suspended": true, "Degraded": true, "Missing": true, "Unknown": true,
}

func argoHealthAll(input []byte, script string) ([]Verdict, error) {
	objs, err := objects(input)
	if err != nil {
		return nil, err
	}
	verdicts := make([]Verdict, 0, len(objs))
	for _, u := range objs {
		verdict, err := argoHealth(u, script)
		if err != nil {
			verdict = Verdict{Status: "Unknown", Message: err.Error()}
		}
		verdicts = append(verdicts, verdict)
	}
	return verdicts, nil
}

func argoHealth(u *unstructured.Unstructured, script string) (Verdict, error) {
	if u.GetDeletionTimestamp() != nil {
		return Verdict{Status: "Progressing", Message: "Pending deletion"}, nil
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Verdict{}, err
		}
	}
	l.PreloadModule("os", safeOs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, u.Object))

	fn, err := l.LoadString(script)
	if err != nil {
		return Verdict{}, err
	}
	l.Push(fn)
	if err := l.PCall(0, lua.MultRet, nil); err != nil {
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = ""
		}
		return Verdict{}, err
	}
	returned := l.Get(-1)
	switch returned.Type() {
	case lua.LTNil:
		return Verdict{}, nil
	case lua.LTTable:
	default:
		return Verdict{}, fmt.Errorf("expect table output from Lua script, not %s", returned.Type())
	}
	encoded, err := luajson.Encode(returned)
	if err != nil {
		return Verdict{}, err
	}
	var verdict Verdict
	if err := json.Unmarshal(encoded, &verdict); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Value == "array" { // an empty table
			return Verdict{}, nil
		}
		return Verdict{}, err
	}
	if !healthCodes[verdict.Status] {
		return Verdict{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return verdict, nil
}

// toLua converts a value of an unstructured object as Argo CD does: numbers (int64 and
// float64) to numbers, lists to sequences, maps to tables, null to nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}

// safeOs is what require("os") gives a health script in Argo CD: os.time and os.date only.
func safeOs(l *lua.LState) int {
	module := l.SetFuncs(l.NewTable(), map[string]lua.LGFunction{"time": osTime, "date": osDate})
	l.Push(module)
	return 1
}

func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	t := l.CheckTable(1)
	field := func(name string, fallback int) int {
		if n, ok := t.RawGetString(name).(lua.LNumber); ok {
			return int(n)
		}
		return fallback
	}
	at := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(at.Unix()))
	return 1
}

// osDate supports the forms a health script may want: os.date("!%Y-%m-%dT%H:%M:%SZ"[, t]) and
// os.date("*t"[, t]) (a leading "!" means UTC), with the conversions Argo CD's date knows.
func osDate(l *lua.LState) int {
	at, format := time.Now(), "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if len(format) > 0 && format[0] == '!' {
			at, format = at.UTC(), format[1:]
		}
		if l.GetTop() >= 2 {
			at = time.Unix(l.CheckInt64(2), 0)
		}
	}
	if len(format) >= 2 && format[:2] == "*t" {
		t := l.NewTable()
		for name, value := range map[string]int{
			"year": at.Year(), "month": int(at.Month()), "day": at.Day(), "hour": at.Hour(),
			"min": at.Minute(), "sec": at.Second(), "wday": int(at.Weekday()) + 1, "yday": 0,
		} {
			t.RawSetString(name, lua.LNumber(value))
		}
		t.RawSetString("isdst", lua.LFalse)
		l.Push(t)
		return 1
	}
	layouts := map[byte]string{
		'a': "Mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "02 Jan 06 15:04 MST", 'd': "02",
		'F': "2006-01-02", 'H': "15", 'I': "03", 'm': "01", 'M': "04", 'p': "PM", 'S': "05",
		'X': "15:04:05", 'y': "06", 'Y': "2006", 'z': "-0700", 'Z': "MST",
	}
	out := make([]byte, 0, len(format))
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			out = append(out, format[i])
			continue
		}
		i++
		if layout, ok := layouts[format[i]]; ok {
			out = append(out, at.Format(layout)...)
		} else {
			out = append(out, '%', format[i])
		}
	}
	l.Push(lua.LString(string(out)))
	return 1
}
