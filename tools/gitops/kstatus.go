package main

import (
	"bytes"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// objects decodes one object, an array of objects or a List, as client-go does (integers
// become int64, as in the objects a controller reads from the API server).
func objects(input []byte) ([]*unstructured.Unstructured, error) {
	input = bytes.TrimSpace(input)
	var raws []json.RawMessage
	if len(input) > 0 && input[0] == '[' {
		if err := json.Unmarshal(input, &raws); err != nil {
			return nil, err
		}
	} else {
		var list struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(input, &list); err != nil {
			return nil, err
		}
		if list.Items != nil {
			raws = list.Items
		} else {
			raws = []json.RawMessage{input}
		}
	}
	result := make([]*unstructured.Unstructured, 0, len(raws))
	for i, raw := range raws {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("object %d: %w", i, err)
		}
		result = append(result, u)
	}
	return result, nil
}

// kstatusAll computes each object's status with sigs.k8s.io/cli-utils/pkg/kstatus/status, the
// library Flux (kustomize-controller, helm-controller) and `kpt live status` use for health.
func kstatusAll(input []byte) ([]Verdict, error) {
	objs, err := objects(input)
	if err != nil {
		return nil, err
	}
	verdicts := make([]Verdict, 0, len(objs))
	for _, u := range objs {
		result, err := status.Compute(u)
		if err != nil {
			verdicts = append(verdicts, Verdict{Status: string(status.UnknownStatus), Message: err.Error()})
			continue
		}
		verdicts = append(verdicts, Verdict{Status: string(result.Status), Message: result.Message})
	}
	return verdicts, nil
}
