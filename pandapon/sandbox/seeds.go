package sandbox

import (
	"fmt"
	"strconv"
	"strings"
)

// Seed refund ids. Each is the data of one of the two published example
// pages, so a client tested against the sandbox has seen the real shapes.
const (
	// SeedRefundOnly is the query page's example, byte for byte: refund
	// only (refundType 1), refundStatus "100" (final), supplierId,
	// purchaseOrderId and purchaseOrderLineId as numbers, payOrderId the
	// 19-digit string "3582133814705377121", properties a free map,
	// receiverAddress null. Submitting logistics on it is refused (409).
	SeedRefundOnly = "110002687818"
	// SeedAwaitingReturn is return and refund (refundType 2) at status 20
	// (seller agreed, waiting for the buyer's return), goodsStatus 2, no
	// logistics yet, shaped like the submission page's aggregate (string
	// ids, properties as {propId, propName, valueId, valueName}). A
	// logistics submission succeeds once on it.
	SeedAwaitingReturn = "110000303674"
	// SeedReturned is the submission page's response aggregate at status 30
	// with goodsStatus 5: logistics already recorded (logisticsNo
	// "43523253245352543", logisticCompanyCode "123456").
	SeedReturned = "110000300003"
)

// SeedRefundIDs returns the ids of the seed refunds, in a fixed order.
func SeedRefundIDs() []string {
	return []string{SeedRefundOnly, SeedAwaitingReturn, SeedReturned}
}

// generatedBase is the first generated refund id.
const generatedBase = 120000000000

// GeneratedRefundID returns the id of the i-th generated refund (0-based):
// strconv.Itoa(120000000000 + i).
func GeneratedRefundID(i int) string { return strconv.Itoa(generatedBase + i) }

// generatedIndex returns i when id is GeneratedRefundID(i) for 0 <= i < n.
func generatedIndex(id string, n int) (int, bool) {
	v, err := strconv.Atoi(id)
	if err != nil || v < generatedBase || v >= generatedBase+n || GeneratedRefundID(v-generatedBase) != id {
		return 0, false
	}
	return v - generatedBase, true
}

// seedData holds the query response's data object of each seed refund.
var seedData = map[string]string{
	// Verbatim from the "Reverse single query" page.
	SeedRefundOnly: `{
        "distributorId": "2100005349129",
        "currency": "CNY",
        "refundOrderAggregate": {
            "logistics": {
                "receiverAddress": null,
                "returnGoodsDesc": null,
                "buyerPhone": null,
                "logisticsCompany": {
                    "logisticsCompanyCode": null,
                    "logisticsCompanyName": null
                },
                "sellerAgreeReturnDescribe": null
            },
            "refundOrder": {
                "refundFee": 392,
                "payOrderId": "3582133814705377121",
                "timeoutType": "sAgreeRefundT",
                "sellerRefuseReason": null,
                "refundStatus": "100",
                "canEditFee": null,
                "remainingTime": null,
                "refundType": 1,
                "feeTips": null,
                "reasonDesc": "我不想要了",
                "goodsStatus": 1,
                "refundDesc": "",
                "reasonId": 150013,
                "timeoutDate": "1698313367000",
                "sellerRefuseReasonDescribe": null,
                "refundId": "110002687818"
            },
            "purchaseOrderLine": {
                "salesOrderId": "500918-1034477311887409465",
                "supplierId": 3937219703,
                "quantity": 1,
                "totalPrice": 392,
                "itemTitle": "零食瓜子仁蟹黄味整箱小包装坚果炒货小零食小吃批发散装休闲食品",
                "postFee": 0,
                "productFee": 392,
                "salesMarket": "TAOBAO_BUYER",
                "purchaseOrderLineId": 200028508721,
                "createTime": 1698216212000,
                "purchaseOrderId": 200028508720,
                "price": null,
                "supplierNick": "天天特卖工厂店",
                "currency": "CNY",
                "properties": {
                    "食品口味": "瓜子仁5包(试吃)"
                },
                "itemImageUrl": "//img.alicdn.com/imgextra/i1/3937219703/O1CN01RFZg0i2LY1pt3OISk_!!3937219703-0-C2M.jpg"
            }
        }
    }`,
	// The refund the submission page's request names, before its return is
	// shipped; shaped like that page's response aggregate.
	SeedAwaitingReturn: `{
        "currency": "CNY",
        "distributorId": "345645363464",
        "refundOrderAggregate": {
            "logistics": {
                "buyerPhone": null,
                "logisticsCompany": {
                    "logisticCompanyCode": null,
                    "logisticsCompanyName": null
                },
                "logisticsNo": null,
                "receiverAddress": {
                    "detailAddress": "贵州省衡水市黄龙县",
                    "phone": "18113016141",
                    "receiver": "test"
                },
                "returnGoodsDesc": null,
                "sellerAgreeReturnDescribe": "test"
            },
            "purchaseOrderLine": {
                "createTime": 1650939239000,
                "currency": "CNY",
                "itemImageUrl": "//img.alicdn.com/bao/uploaded/i1/2206891060210/O1CN01PhrEzv1DQDkoAEtGI_!!2206891060210.png",
                "itemTitle": "Please Do Not Shoot Panama for Testing",
                "postFee": 0,
                "price": 0,
                "productFee": 0,
                "properties": {
                    "propId": 1,
                    "propName": "test",
                    "valueId": 1,
                    "valueName": "test"
                },
                "purchaseOrderId": "200002638020",
                "purchaseOrderLineId": "200002638022",
                "quantity": 1,
                "salesMarket": "TAOBAO_BUYER",
                "salesOrderId": "30500000-FY20220426002",
                "supplierId": "2206891060210",
                "supplierNick": "测试账号tbc003",
                "totalPrice": 0
            },
            "refundOrder": {
                "canEditFee": true,
                "feeTips": "test",
                "goodsStatus": 2,
                "payOrderId": "2597049687002736173",
                "reasonDesc": "test",
                "reasonId": 403529,
                "refundDesc": "test",
                "refundFee": 0,
                "refundId": "110000303674",
                "refundStatus": "20",
                "refundType": 2,
                "remainingTime": "1131386064",
                "sellerRefuseReason": null,
                "sellerRefuseReasonDescribe": null,
                "timeoutDate": "1653039723000",
                "timeoutType": "bReturnGoodsT"
            }
        }
    }`,
	// The submission page's response aggregate, moved on to status 30 /
	// goodsStatus 5 (its logistics are recorded).
	SeedReturned: `{
        "currency": "CNY",
        "distributorId": "345645363464",
        "refundOrderAggregate": {
            "logistics": {
                "buyerPhone": "18668754522",
                "logisticsCompany": {
                    "logisticCompanyCode": "123456",
                    "logisticsCompanyName": "test"
                },
                "logisticsNo": "43523253245352543",
                "receiverAddress": {
                    "detailAddress": "贵州省衡水市黄龙县",
                    "phone": "18113016141",
                    "receiver": "test"
                },
                "returnGoodsDesc": "test",
                "sellerAgreeReturnDescribe": "test"
            },
            "purchaseOrderLine": {
                "createTime": 1650939239000,
                "currency": "CNY",
                "itemImageUrl": "//img.alicdn.com/bao/uploaded/i1/2206891060210/O1CN01PhrEzv1DQDkoAEtGI_!!2206891060210.png",
                "itemTitle": "Please Do Not Shoot Panama for Testing",
                "postFee": 0,
                "price": 0,
                "productFee": 0,
                "properties": {
                    "propId": 1,
                    "propName": "test",
                    "valueId": 1,
                    "valueName": "test"
                },
                "purchaseOrderId": "200002638008",
                "purchaseOrderLineId": "200002638010",
                "quantity": 1,
                "salesMarket": "TAOBAO_BUYER",
                "salesOrderId": "30500000-FY20220426001",
                "supplierId": "2206891060210",
                "supplierNick": "测试账号tbc003",
                "totalPrice": 0
            },
            "refundOrder": {
                "canEditFee": true,
                "feeTips": "test",
                "goodsStatus": 5,
                "payOrderId": "2597049687002736161",
                "reasonDesc": "test",
                "reasonId": 403529,
                "refundDesc": "test",
                "refundFee": 0,
                "refundId": "110000300003",
                "refundStatus": "30",
                "refundType": 2,
                "remainingTime": "1131386064",
                "sellerRefuseReason": "test",
                "sellerRefuseReasonDescribe": "test",
                "timeoutDate": "1653039723000",
                "timeoutType": "bReturnGoodsT"
            }
        }
    }`,
}

// generatedTemplate is the query data of a generated refund; {{...}} are
// replaced per index by generatedData.
const generatedTemplate = `{
    "distributorId": "2100005349129",
    "currency": "CNY",
    {{dataExtra}}
    "refundOrderAggregate": {
        "logistics": {
            "receiverAddress": {{receiverAddress}},
            "returnGoodsDesc": null,
            "buyerPhone": null,
            "logisticsCompany": {
                "{{companyCodeKey}}": null,
                "logisticsCompanyName": null
            },
            "sellerAgreeReturnDescribe": "请寄回原包装，勿用到付"
        },
        "refundOrder": {
            {{refundOrderExtra}}
            "refundFee": {{fee}},
            "payOrderId": {{payOrderId}},
            "timeoutType": "bReturnGoodsT",
            "sellerRefuseReason": null,
            "refundStatus": {{refundStatus}},
            "canEditFee": false,
            "remainingTime": "604800000",
            "refundType": 2,
            "feeTips": null,
            "reasonDesc": "尺码不合适",
            "goodsStatus": 2,
            "refundDesc": "sandbox generated refund {{i}}",
            "reasonId": 150014,
            "timeoutDate": "1698918167000",
            "sellerRefuseReasonDescribe": null,
            "refundId": {{refundId}}
        },
        "purchaseOrderLine": {
            {{lineExtra}}
            "salesOrderId": "500918-{{salesOrderSuffix}}",
            "supplierId": {{supplierId}},
            "quantity": 1,
            "totalPrice": {{fee}},
            "itemTitle": "沙箱测试商品 {{i}}",
            "postFee": 0,
            "productFee": {{fee}},
            "salesMarket": "TAOBAO_BUYER",
            "purchaseOrderLineId": {{purchaseOrderLineId}},
            "createTime": 1698216212000,
            "purchaseOrderId": {{purchaseOrderId}},
            "price": {{fee}},
            "supplierNick": "沙箱店铺",
            "currency": "CNY",
            "properties": {{properties}},
            "itemImageUrl": "//img.alicdn.com/imgextra/i1/3937219703/O1CN01RFZg0i2LY1pt3OISk_!!3937219703-0-C2M.jpg"
        }
    }
}`

// generatedData renders the query data of generated refund i. The type
// mess rotates with i so that any few consecutive refunds cover every
// variant PandaPon is known to send:
//
//	i%2 == 0: ids (refundId, supplierId, purchaseOrderId, purchaseOrderLineId)
//	          as strings, logisticsCompanyCode spelling, unknown fields
//	          "exchangeRate": 12.50 (data) and "refundChannel" (refundOrder)
//	i%2 == 1: ids as numbers, logisticCompanyCode spelling, unknown fields
//	          "skuId" and "extInfo" (purchaseOrderLine), "exchangeRate": 7.10
//	i%3:      payOrderId as a 19-digit JSON number (0) or string (1, 2);
//	          receiverAddress object (0), string (1), null (2)
//	i%4 < 2:  refundStatus "20" (string), else 20 (number)
//	(i/2)%2:  properties {propId, propName, valueId, valueName} (0) or a
//	          free map of name to value (1)
func generatedData(i int) string {
	idLit := func(n int64) string {
		s := strconv.FormatInt(n, 10)
		if i%2 == 0 {
			return strconv.Quote(s)
		}
		return s
	}
	payOrderID := fmt.Sprintf("35821338147%08d", i%100000000) // 19 digits
	if i%3 != 0 {
		payOrderID = strconv.Quote(payOrderID)
	}
	receiverAddress := []string{
		`{"receiver": "沙箱退货仓", "phone": "0571-88888888", "detailAddress": "浙江省杭州市余杭区文一西路969号"}`,
		`"浙江省杭州市余杭区文一西路969号 沙箱退货仓 0571-88888888"`,
		`null`,
	}[i%3]
	refundStatus := `"20"`
	if i%4 >= 2 {
		refundStatus = `20`
	}
	properties := `{"propId": 1627207, "propName": "颜色分类", "valueId": 28341, "valueName": "黑色"}`
	if (i/2)%2 == 1 {
		properties = `{"颜色分类": "黑色", "尺码": "XL"}`
	}
	companyCodeKey := "logisticsCompanyCode"
	dataExtra := `"exchangeRate": 12.50,`
	refundOrderExtra := `"refundChannel": "ORIGINAL", "promiseTime": null,`
	lineExtra := ``
	if i%2 == 1 {
		companyCodeKey = "logisticCompanyCode"
		dataExtra = `"exchangeRate": 7.10,`
		refundOrderExtra = ``
		lineExtra = `"skuId": 5270018833431, "extInfo": {"tags": [1, "gift", null], "weight": 0.350},`
	}
	n := int64(generatedBase + i)
	return strings.NewReplacer(
		"{{i}}", strconv.Itoa(i),
		"{{dataExtra}}", dataExtra,
		"{{refundOrderExtra}}", refundOrderExtra,
		"{{lineExtra}}", lineExtra,
		"{{receiverAddress}}", receiverAddress,
		"{{companyCodeKey}}", companyCodeKey,
		"{{fee}}", strconv.Itoa(100+i%900),
		"{{payOrderId}}", payOrderID,
		"{{refundStatus}}", refundStatus,
		"{{refundId}}", idLit(n),
		"{{salesOrderSuffix}}", "10344773118874"+fmt.Sprintf("%05d", i%100000),
		"{{supplierId}}", idLit(3937219703),
		"{{purchaseOrderLineId}}", idLit(300000000000+2*int64(i)+1),
		"{{purchaseOrderId}}", idLit(300000000000+2*int64(i)),
		"{{properties}}", properties,
	).Replace(generatedTemplate)
}
