// argo-eval: Argo Rollouts' measurement verdict for a metric result, with the expression engine Argo
// Rollouts uses (github.com/expr-lang/expr, the version in its go.mod). The verdict logic is
// utils/evaluate/evaluate.go's EvaluateResult: success and failure conditions; a failure wins;
// neither is Inconclusive; only a success condition means "not success is failure".
//
// stdin: {"result": <the JSON answer>, "successCondition": "...", "failureCondition": "..."}
// stdout: Successful | Failed | Inconclusive | Error: <why>
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/expr-lang/expr"
)

type input struct {
	Result           any    `json:"result"`
	SuccessCondition string `json:"successCondition"`
	FailureCondition string `json:"failureCondition"`
}

func eval(result any, condition string) (bool, error) {
	env := map[string]any{"result": result}
	program, err := expr.Compile(condition, expr.Env(env))
	if err != nil {
		return false, err
	}
	output, err := expr.Run(program, env)
	if err != nil {
		return false, err
	}
	value, ok := output.(bool)
	if !ok {
		return false, fmt.Errorf("expected bool, but got %T", output)
	}
	return value, nil
}

func verdict(in input) string {
	success, failure := false, false
	var err error
	if in.SuccessCondition != "" {
		if success, err = eval(in.Result, in.SuccessCondition); err != nil {
			return "Error: " + err.Error()
		}
	}
	if in.FailureCondition != "" {
		if failure, err = eval(in.Result, in.FailureCondition); err != nil {
			return "Error: " + err.Error()
		}
	}
	switch {
	case in.SuccessCondition == "" && in.FailureCondition == "":
		return "Successful"
	case in.SuccessCondition != "" && in.FailureCondition == "":
		failure = !success
	case in.SuccessCondition == "" && in.FailureCondition != "":
		success = !failure
	}
	if failure {
		return "Failed"
	}
	if !success {
		return "Inconclusive"
	}
	return "Successful"
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Println("Error: " + err.Error())
		return
	}
	fmt.Println(verdict(in))
}
